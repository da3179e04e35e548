"""The simulator (docs/simulator.md): a professional-services firm's CLM, middleware and ERP
traffic, sent to syncwatch over its public ingest API like a real integration, and a fake
middleware that answers replays."""

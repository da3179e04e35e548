"""Message-broker consumers (docs/brokers.md): RabbitMQ queues and NATS JetStream streams whose
messages carry events, stored through the one ingest path and acknowledged after the commit."""

"""The ``webhooks:`` section of the settings (docs/webhooks.md, docs/mapping.md): where your own
mapping presets live, and for each preset the environment variables holding its signing secrets,
the timestamp tolerance and whether an ``ingest`` key may post to it unsigned.

Secrets never go into the YAML file: ``secret_envs`` names one or two environment variables (two
while a secret is rotated: both are accepted); they are checked when the settings are read, so a
missing one stops start-up with the key's name."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.replay_settings import env_var_name


class PresetWebhookSettings(BaseModel):
    """One preset's webhook: its signing secrets (by environment variable) and checks."""

    model_config = ConfigDict(extra="forbid")

    #: the NAMES of 1 or 2 environment variables holding the signing secret(s) (rotation: the
    #: new and the old one are both accepted); for ``ironclad`` they hold Ironclad's public key
    #: (PEM). Empty: the preset is not verified by signature and needs an ``ingest`` key.
    secret_envs: list[str] = Field(default_factory=list, max_length=2)
    #: seconds a signed delivery's timestamp may be away from now (schemes with a timestamp);
    #: None: the section's ``tolerance_seconds``
    tolerance_seconds: int | None = Field(default=None, ge=1, le=86_400)
    #: whether a caller with an ``ingest`` key may post without a signature when secrets are set
    allow_ingest_key: bool = True

    @field_validator("secret_envs")
    @classmethod
    def _names_variables(cls, value: list[str]) -> list[str]:
        for name in value:
            env_var_name(name)
        if len(set(value)) != len(value):
            raise ValueError("names the same environment variable twice")
        return value

    def secrets(self) -> list[str]:
        """The secrets themselves, read now from the environment (never logged)."""
        return [os.environ[name] for name in self.secret_envs if os.environ.get(name)]


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: default timestamp tolerance in seconds (Standard Webhooks recommends 5 minutes)
    tolerance_seconds: int = Field(default=300, ge=1, le=86_400)
    #: per preset name
    presets: dict[str, PresetWebhookSettings] = Field(default_factory=dict)

    def for_preset(self, name: str) -> PresetWebhookSettings:
        return self.presets.get(name) or PresetWebhookSettings()

    def tolerance(self, name: str) -> int:
        own = self.for_preset(name).tolerance_seconds
        return self.tolerance_seconds if own is None else own

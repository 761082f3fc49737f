"""chat_ui settings, read from the environment (prefix CHAT_UI_)."""

from __future__ import annotations

import re
import socket
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The development default: good enough on a laptop, refused in production so that a
# deployment never signs cookies with a secret published in the repository.
DEFAULT_SECRET = "parlor-development-secret-change-me"  # noqa: S105 (public on purpose)
# One character of a form, at worst: 4 bytes of UTF-8, each written %XX in a urlencoded body.
WORST_CASE_BYTES_PER_CHAR = 12
# The rest of a form besides its longest text (the CSRF token, field names).
FORM_OVERHEAD_BYTES = 16 * 1024


# A replica's name: printable ASCII without spaces or `/` (which separates the start id in
# a lease), short enough for db_api's lease_owner with the start id after it.
REPLICA_NAME = r"^[\x21-\x2e\x30-\x7e]+$"


def _host_name() -> str:
    """The host name as a valid replica name (a long or exotic one trimmed, not refused)."""
    name = re.sub(r"[^\x21-\x2e\x30-\x7e]", "-", socket.gethostname())[:64]
    return name or "chat-ui"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_UI_", extra="ignore")

    db_api_url: str = "http://127.0.0.1:8001"
    # An OpenAI base URL including /v1, so any OpenAI-compatible server can stand in.
    lm_api_url: str = "http://127.0.0.1:8002/v1"
    secret_key: str = DEFAULT_SECRET
    internal_token: str = ""
    env: Literal["development", "production"] = "development"
    # Model id sent to the OpenAI API; empty = the first model /v1/models lists.
    model: str = ""
    default_system_prompt: str = "You are a helpful assistant."
    max_tokens: int = Field(default=512, ge=1)
    # Context size used when /v1/models gives no meta.n_ctx.
    context_tokens: int = Field(default=4096, ge=64)
    # After a chat's first answer, ask the model for a short title (chat_ui.titles).
    model_titles: bool = True

    # How long a login lasts; the browser key cookie lives much longer (see session.py).
    session_max_age_s: int = Field(default=14 * 24 * 3600, ge=60)
    browser_key_max_age_s: int = Field(default=400 * 24 * 3600, ge=60)
    max_name_chars: int = Field(default=64, ge=1, le=128)
    max_title_chars: int = Field(default=200, ge=1)
    max_message_chars: int = Field(default=100_000, ge=1)
    max_system_prompt_chars: int = Field(default=20_000, ge=1)
    # Bodies above this are refused with 413 before any route reads them. Unset: derived
    # from the longest text a form may carry (see body_limit), so that no message within
    # max_message_chars is ever refused for its size in bytes.
    max_body_bytes: int | None = Field(default=None, ge=1024)
    # An uploaded export (POST /import) may be this large (db_api has its own limit).
    import_max_bytes: int = Field(default=64 * 1024 * 1024 + 64 * 1024, ge=1024)
    # Partial answers are written to db_api at least this often (also what another
    # replica following the answer sees: its lag is this plus follow_poll_s).
    flush_interval_s: float = Field(default=0.5, gt=0)
    db_timeout_s: float = Field(default=10.0, gt=0)
    lm_connect_timeout_s: float = Field(default=5.0, gt=0)
    # A model server that sends nothing (not even a keep-alive) for this long has
    # stalled: the answer ends in error with the reason model_stalled.
    lm_stall_s: float = Field(default=60.0, gt=0)
    # After this long without a token, the page says whether the model server is busy or
    # not answering at all.
    lm_quiet_s: float = Field(default=5.0, gt=0)
    # A final save that storage refused is retried with backoff up to this pause, for
    # as long as chat_ui runs.
    save_retry_max_s: float = Field(default=10.0, gt=0)
    # A login is checked against its server-side record at most this often per process
    # (a logout elsewhere takes effect within this time)...
    session_check_s: float = Field(default=5.0, ge=0)
    # ...and, while storage cannot be reached, a login checked this recently still counts.
    session_grace_s: float = Field(default=300.0, ge=0)

    # Several replicas (chat_ui/leases.py): this process's name on the answers it writes.
    # The default, the host name, stays the same when the process (or its container)
    # restarts, so a restarted replica ends its own orphaned answers at once; processes
    # sharing a host need names of their own.
    replica_name: str = Field(
        default_factory=lambda: _host_name(), min_length=1, max_length=64, pattern=REPLICA_NAME
    )
    # An answer's lease: how long it outlives its replica, and how often it is renewed.
    lease_s: float = Field(default=10.0, gt=0, le=3600)
    lease_renew_s: float = Field(default=2.0, gt=0)
    # A replica that does not write an answer reads its saved text this often to follow it.
    follow_poll_s: float = Field(default=0.4, gt=0)

    @model_validator(mode="after")
    def _renewal_well_within_the_lease(self) -> Settings:
        # A renewal that fails once (a slow request, a db_api restart) must still leave
        # time for the next before the lease runs out.
        if self.lease_renew_s * 2 > self.lease_s:
            raise ValueError(
                "CHAT_UI_LEASE_RENEW_S must be at most half of CHAT_UI_LEASE_S "
                f"(got {self.lease_renew_s:g} and {self.lease_s:g})"
            )
        return self

    @property
    def body_limit(self) -> int:
        """The largest request body accepted, in bytes."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        longest = max(self.max_message_chars, self.max_system_prompt_chars)
        return longest * WORST_CASE_BYTES_PER_CHAR + FORM_OVERHEAD_BYTES

    # Sign-in through an authenticating proxy (chat_ui/trusted_identity.py): the header
    # carrying the person's identity (e.g. X-Forwarded-Email); empty: off.
    trusted_user_header: str = ""
    # The addresses (IPs or CIDRs, comma-separated) whose requests may carry that header.
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    # uvicorn's own setting (no prefix), read only to refuse `*` with the header on.
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("FORWARDED_ALLOW_IPS", "forwarded_allow_ips"),
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _production_needs_a_secret(self) -> Settings:
        if self.env == "production" and (
            self.secret_key == DEFAULT_SECRET or len(self.secret_key) < 16
        ):
            raise ValueError(
                "CHAT_UI_SECRET_KEY must be set to a random value of at least 16 characters "
                "when CHAT_UI_ENV=production"
            )
        return self

    @model_validator(mode="after")
    def _trusted_header_needs_trusted_proxies(self) -> Settings:
        from chat_ui.trusted_identity import configuration_problem

        problem = configuration_problem(self)
        if problem and self.env == "production":
            raise ValueError(problem)
        return self

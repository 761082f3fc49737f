"""Answer leases: how several chat_ui replicas share answers without fighting over them.

The replica that writes an answer holds a lease on it in db_api: `lease_owner` names the
replica and this process (`<CHAT_UI_REPLICA_NAME>/<a random id per start>`), and
`lease_until` is when the claim lapses. The lease is taken in the same transaction that
creates the pending answer (a turn, a reopen for Retry), renewed every
`CHAT_UI_LEASE_RENEW_S` for `CHAT_UI_LEASE_S` while the answer runs (`keep`), and dies
with the process. A replica that finds a running answer no generation of its own writes
(`settle`):

- leaves it running while another process's lease is live: that replica writes it, and
  this one follows it from what it saves (chat_ui/follower.py);
- ends it as `interrupted`, reason `lease_expired`, once that lease has lapsed (its
  replica died, or cannot reach storage for longer than the lease);
- ends it at once, reason `server_restarted`, when the lease carries its own replica name
  under an earlier start id: it is this replica, restarted (the host name, the default
  name, survives a restart of the process or its container), so nothing writes it any
  more. This is how the single-process setup still ends an answer cut off by a restart
  as soon as the page is looked at, without waiting for the lease. Two live processes
  must therefore never share a name;
- ends an answer with no lease at all (written before leases existed) the same way, once
  it has not changed for a lease's length (a generation claims an answer created without
  a lease on its first renewal, as it starts).

db_api decides each of these in one conditional UPDATE (`POST /messages/{id}/expire`),
so two replicas looking at the same answer at once end it once, and never while a live
lease holds it.

Stop works from any replica: the one that does not write the answer sets its
`stop_requested` flag (a control write that never makes the writer's next write stale)
and polls until the answer is final; the writing replica sees the flag in the answer its
next partial save or lease renewal returns, and stops as if Stop had been pressed there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from chat_ui.clients import DbApi, DbRejected, DbUnavailable, NotFound, Stale
from chat_ui.config import Settings
from chat_ui.contracts import Message, MessagePatch
from db_contract import FINAL, Reason

if TYPE_CHECKING:
    from chat_ui.generation import Generation

log = logging.getLogger("chat_ui.leases")

RESTARTED_ERROR = "The answer was cut off when Parlor restarted."
LAPSED_ERROR = "The answer was cut off: the server writing it stopped answering."
# How long a Stop asked of another replica may wait beyond the lease for the answer to end.
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Replica:
    """This process as a writer of answers: its lease name and the lease's timing."""

    name: str
    start_id: str
    lease_s: float
    renew_s: float
    poll_s: float

    @classmethod
    def start(cls, settings: Settings) -> Replica:
        """This process, with a start id of its own (a restart gets a new one)."""
        return cls(
            name=settings.replica_name,
            start_id=secrets.token_hex(4),
            lease_s=settings.lease_s,
            renew_s=settings.lease_renew_s,
            poll_s=settings.follow_poll_s,
        )

    @property
    def lease_owner(self) -> str:
        return f"{self.name}/{self.start_id}"

    def claim(self) -> dict[str, object]:
        """The lease fields of a write that creates or renews an answer this process writes."""
        return {"lease_owner": self.lease_owner, "lease_s": self.lease_s}

    def renewal(self) -> MessagePatch:
        return MessagePatch(lease_owner=self.lease_owner, lease_s=self.lease_s)

    # --- an answer no generation of this process writes -------------------------------------

    def orphaned(self, message: Message, now: datetime | None = None) -> Reason | None:
        """Why nothing will ever finish this running answer, or None while a live
        generation may still be writing it."""
        owner, now = message.lease_owner, now or _now()
        if owner == self.lease_owner:
            return None  # this process: its generation is being started right now
        if owner is None:
            # Never leased: written before leases existed, or by a path that leaves the
            # claim to its generation's first renewal, moments later. Left alone for a
            # lease's length, nothing writes it.
            idle = not message.updated_at or (
                _when(message.updated_at) + timedelta(seconds=self.lease_s) <= now
            )
            return "server_restarted" if idle else None
        if owner.partition("/")[0] == self.name:
            return "server_restarted"  # this replica's previous start
        if message.lease_until is None or _when(message.lease_until) <= now:
            return "lease_expired"
        return None

    async def settle(self, db: DbApi, owner: str, message: Message) -> Message:
        """A running answer that no generation of this process writes, as it truly
        stands: ended (interrupted, with the reason) when nothing will finish it, else as
        stored. db_api has the last word: a lease renewed meanwhile keeps it running."""
        reason = self.orphaned(message)
        if reason is None:
            return message
        error = RESTARTED_ERROR if reason == "server_restarted" else LAPSED_ERROR
        # Our own previous start's lease is ours to drop; anyone else's must have lapsed.
        own = message.lease_owner if reason == "server_restarted" else None
        try:
            return await db.expire(owner, message.id, reason, error, lease_owner=own)
        except Stale as exc:
            return exc.stored or message
        except NotFound:
            return message

    async def stop_elsewhere(self, db: DbApi, owner: str, message: Message) -> Message:
        """Stop an answer another replica writes: flag it in storage, then wait (polling)
        until that replica has ended it, keeping its text. A replica that is gone cannot
        answer the flag: its answer ends once the lease lapses. The answer as it stands
        at the end of the wait (still running if the writer neither stopped nor died)."""
        stored = await db.update_message(owner, message.id, MessagePatch(stop_requested=True))
        deadline = time.monotonic() + self.lease_s + STOP_GRACE_S
        while stored.running and time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            stored = await self.settle(db, owner, await db.get_message(owner, message.id))
        return stored

    # --- an answer this process writes ------------------------------------------------------

    async def keep(self, db: DbApi, gen: Generation) -> None:
        """Renew the lease of a running generation until it ends (cancelled with it);
        stop it when storage says another replica asked for a Stop, or ended it."""
        while True:
            try:
                stored = await db.update_message(gen.owner, gen.message_id, self.renewal())
            except NotFound:
                # The chat was deleted while answering: stop answering it.
                gen.deleted = True
                _cancel(gen)
                return
            except (DbUnavailable, DbRejected) as exc:
                # The flush loop tells the page; the lease may lapse if this lasts.
                log.warning("lease renewal of %s failed: %s", gen.message_id, exc)
            else:
                if obey(gen, stored):
                    return
            await asyncio.sleep(self.renew_s)


def obey(gen: Generation, stored: Message) -> bool:
    """Act on what storage says about an answer this process writes: a Stop asked for by
    another replica, or an end someone else wrote (its lease lapsed). True if it ends."""
    if stored.status in FINAL:
        gen.superseded = stored
    elif stored.stop_requested:
        gen.stop_reason = "stopped"
    else:
        return False
    _cancel(gen)
    return True


def _cancel(gen: Generation) -> None:
    if gen.task is not None:
        gen.task.cancel()


def _now() -> datetime:
    return datetime.now(UTC)


def _when(stamp: str) -> datetime:
    when = datetime.fromisoformat(stamp)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

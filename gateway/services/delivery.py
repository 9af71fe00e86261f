"""The delivery worker: sends outbox messages, at least once on the wire, once in effect.

- Claims due messages with a lease in the store (and, with Redis, a lease in Redis too), so two
  gateway instances never send one message at the same time; an expired lease (a crashed
  instance) makes the message claimable again, and the partner de-duplicates by message id. A
  message this instance can send at once is leased to it by the write that creates it
  (``lease_for``) and handed over directly (``dispatch``), without a claim. A message that
  waited long for a free connection to its partner renews its leases as it goes out
  (``_still_ours``).
- A per-partner circuit breaker stops sending to a partner that keeps failing and lets one probe
  through after ``breaker_reset_seconds`` (the rest wait unclaimed for its outcome; any answer
  closes the circuit); per-partner timeouts and concurrency limits.
- A partner that refused our envelope as stale or replayed gets it once more, re-sealed
  (tenacity, within the attempt); other transient failures are rescheduled in the
  store with exponential backoff and jitter, until ``delivery_max_age_seconds`` or
  ``delivery_max_attempts``: then the message is a dead letter (an alert line, the audit log,
  ``xgw outbox list``; ``xgw outbox replay`` sends it again).
- Graceful stop: no new claims, in-flight sends get ``shutdown_grace_seconds``, the rest of the
  leases are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import orjson
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adapters.delivery_errors import RESEALABLE, DeliveryError
from adapters.http_post import MaterialSource
from adapters.local_system import LocalSystemClient
from adapters.redis_leases import RedisLeases
from gateway.config import Settings
from gateway.core import lifecycle
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.partners import PartnerRegistry
from gateway.services.cases import CaseService
from gateway.services.inbound import InboundService
from gateway.services.materials import sealed_stream, stored_plaintext
from gateway.services.records import Recorder
from gateway.storage import ExchangeRecord, OutboxMessage, Store
from security import envelope as env
from security.errors import SecurityError

log = get_logger("gateway.services.delivery")
LOCAL = "local"  # the outbox's name for our own back office
MAX_IN_FLIGHT = 256  # deliveries one instance has under way at once
# Within one delivery attempt: a partner that found our envelope stale or replayed gets it once
# more, re-sealed, after a short pause (tenacity); every other failure is the outbox's to retry.
RESEAL_ONCE = AsyncRetrying(
    stop=stop_after_attempt(2),
    wait=wait_exponential_jitter(multiplier=0.05, max=0.5),
    retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.code in RESEALABLE),
    reraise=True,
)


def _forget(tasks: dict[str, asyncio.Task[None]], msg_id: str, task: asyncio.Task[None]) -> None:
    if tasks.get(msg_id) is task:  # not a later delivery of the same message
        del tasks[msg_id]


class PartnerClient(Protocol):
    async def send(
        self,
        url: str,
        envelope: env.Envelope,
        timeout: float,
        materials: MaterialSource | None = None,
    ) -> env.Envelope:
        """The partner's sealed reply; ``materials``: an XGW-ENV/2 message's sealed streams."""
        ...

    async def close(self) -> None: ...


@dataclass
class CircuitBreaker:
    """closed → (failures ≥ threshold) → open → (reset time passed) → half-open: one probe."""

    threshold: int
    reset_seconds: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    def allows(self, now: float) -> bool:
        if not self.may_claim(now):
            return False
        if self.opened_at is not None:
            self.probing = True  # half-open: exactly one probe
        return True

    def may_claim(self, now: float) -> bool:
        """The partner's messages may be taken from the outbox: the circuit is closed, or it
        is time for a probe and none is under way. While one is, the rest wait unclaimed for
        its outcome (claimed, each would only be put back, again and again)."""
        if self.opened_at is None:
            return True
        return now - self.opened_at >= self.reset_seconds and not self.probing

    def reopens_at(self) -> float:
        return (self.opened_at or time.time()) + self.reset_seconds

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            self.opened_at = now


def backoff(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry (1-based)."""
    ceiling = min(maximum, initial * (2 ** min(attempt - 1, 30)))
    return max(initial / 2, rng.uniform(0, ceiling))


@dataclass
class PartnerLane:
    breaker: CircuitBreaker
    limit: asyncio.Semaphore
    in_flight: int = 0


@dataclass
class Worker:
    """Claims due messages and sends them: to partners, and inbound cases to our back office.
    The services it reports outcomes to are attached once they exist (``attach``): they set
    its messages going, it tells them how each went — the one link that points back."""

    settings: Settings
    store: Store
    partners: PartnerRegistry
    clients: dict[tuple[str, str], PartnerClient]  # (region, protocol) -> client
    owner: str
    local_client: LocalSystemClient
    leases: RedisLeases | None = None  # shared with other instances, when configured
    metrics: Metrics = field(default_factory=Metrics)
    recorder: Recorder | None = None  # operational records of each send
    poll_seconds: float = 0.1
    _service: CaseService | None = None
    _inbound: InboundService | None = None
    lanes: dict[str, PartnerLane] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # by message id
    _stopping: bool = False
    # The claim loop's health, for /readyz: the error type while claims fail, else None.
    claim_error: str | None = None
    claim_failures: int = 0  # in a row; reset by a claim that works
    _started: float = field(default_factory=time.time)
    _last_beat: float = 0.0  # time.monotonic() of this owner's last heartbeat in the store
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _rng: random.Random = field(default_factory=random.Random)

    def attach(self, service: CaseService, inbound: InboundService) -> None:
        self._service, self._inbound = service, inbound

    @property
    def service(self) -> CaseService:
        assert self._service is not None, "attach() the services before running the worker"
        return self._service

    @property
    def inbound(self) -> InboundService:
        assert self._inbound is not None, "attach() the services before running the worker"
        return self._inbound

    def lane(self, region: str) -> PartnerLane:
        lane = self.lanes.get(region)
        if lane is None:
            partner = self.partners.get(region)
            lane = PartnerLane(
                CircuitBreaker(partner.breaker_failures, partner.breaker_reset_seconds),
                asyncio.Semaphore(partner.max_concurrency),
            )
            self.lanes[region] = lane
        return lane

    def _circuit_allows_claim(self, region: str) -> bool:
        """Messages for a partner whose circuit is open stay queued, unclaimed and uncounted."""
        if region == LOCAL:
            return True
        return self.lane(region).breaker.may_claim(time.time())

    def wake(self) -> None:
        self._wake.set()

    def lease_for(self, partner: str) -> tuple[str, float] | None:
        """A message just written for ``partner`` is ours at once if we can send it now: the
        case service leases it to us in its own write, and no claim is needed."""
        if (
            self._stopping
            or len(self._tasks) >= MAX_IN_FLIGHT
            or not self._circuit_allows_claim(partner)
        ):
            return None
        return self.owner, time.time() + self.settings.delivery_lease_seconds

    def dispatch(self, messages: list[OutboxMessage]) -> None:
        for message in messages:
            held = self._tasks.get(message.msg_id)
            if held is not None and not held.done():
                # Ours already, still waiting for a free connection to its partner while its
                # lease ran out: the claim only renewed the lease; one delivery is enough.
                continue
            task = asyncio.create_task(self._leased_delivery(message))
            self._tasks[message.msg_id] = task
            task.add_done_callback(partial(_forget, self._tasks, message.msg_id))

    async def _leased_delivery(self, message: OutboxMessage) -> None:
        """One message's attempt, under its Redis lease when instances share the work. Nothing
        escapes this task: what cannot be handled is logged, and the message's lease runs out
        for a later claim to take it again."""
        try:
            if self._stopping:  # shutting down: no new send starts
                await self.store.release([message.msg_id], self.owner)
                return
            if self.leases is not None:
                try:
                    leased = await self.leases.take(
                        message.msg_id, self.settings.delivery_lease_seconds, message.taken_from
                    )
                except RedisError as exc:  # this attempt failed; the message is retried
                    await self._failed(
                        message,
                        DeliveryError("REDIS_UNAVAILABLE", type(exc).__name__, True, reached=False),
                    )
                    return
                if not leased:
                    await self.store.release([message.msg_id], self.owner)
                    return
            await self._deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the store failing as it records the outcome
            log.error(
                "delivery.unrecorded",
                message_id=message.msg_id,
                error_type=type(exc).__name__,
                note="the lease runs out and the message is claimed again",
            )

    async def run(self) -> None:
        """Claim due messages and set them going, until stopped. A claim that fails (a full
        disk, a locked or lost database) is logged and retried with backoff, and /readyz says
        not ready meanwhile; the loop never ends on an error."""
        while not self._stopping:
            try:
                await self._heartbeat()
                messages = await self._claim()
            except Exception as exc:
                self.claim_failures += 1
                self.claim_error = type(exc).__name__
                delay = min(5.0, 0.1 * 2 ** min(self.claim_failures, 6))
                log.error(
                    "delivery.claim_failed",
                    error_type=self.claim_error,
                    failures=self.claim_failures,
                    retry_in_seconds=delay,
                )
                await asyncio.sleep(delay)
                continue
            if self.claim_failures:
                log.info("delivery.claim_recovered", failures=self.claim_failures)
            self.claim_failures, self.claim_error = 0, None
            dead = sorted({m.taken_from for m in messages if m.taken_from is not None})
            if dead:  # another process stopped beating with these in hand
                log.warning(
                    "delivery.taken_over",
                    dead_owners=dead,
                    messages=sum(m.taken_from is not None for m in messages),
                )
            self.dispatch(messages)
            if not messages:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _heartbeat(self) -> None:
        """Tell the other nodes we are alive, every ``node_heartbeat_seconds``: one that stops
        beating for ``node_dead_after_seconds`` loses its leases to the others' next claim."""
        if time.monotonic() - self._last_beat >= self.settings.node_heartbeat_seconds:
            await self.store.heartbeat(self.owner, self.settings.node_id, self._started)
            self._last_beat = time.monotonic()

    async def _claim(self) -> list[OutboxMessage]:
        capacity = max(0, MAX_IN_FLIGHT - len(self._tasks))
        if not capacity:
            return []
        return await self.store.claim(
            self.owner,
            capacity,
            self.settings.delivery_lease_seconds,
            skip_partners=[r for r in self.lanes if not self._circuit_allows_claim(r)],
            dead_after=self.settings.node_dead_after_seconds,
        )

    async def _still_ours(self, message: OutboxMessage) -> bool:
        """Renew the message's lease as it is about to go out. A message can wait longer than
        its lease for a free connection to a slow partner; sent without this, another worker
        (or this one, claiming again) could be sending it at the same time."""
        now, lease = time.time(), self.settings.delivery_lease_seconds
        if message.lease_until is not None and message.lease_until - now > lease / 2:
            return True  # taken moments ago (the usual case): nobody else can have it yet
        if not await self.store.renew_lease(message.msg_id, self.owner, now + lease):
            return False
        if self.leases is None:
            return True
        return await self.leases.renew(message.msg_id, lease)

    async def _deliver(self, message: OutboxMessage) -> None:
        """One attempt; whatever happens, the message ends delivered, rescheduled or dead."""
        try:
            if message.partner == LOCAL:
                await self._to_back_office(message)
            else:
                await self._to_partner(message)
        except DeliveryError as exc:
            await self._failed(message, exc)
        except asyncio.CancelledError:
            await self.store.release([message.msg_id], self.owner)
            raise
        except Exception as exc:  # never lose a message to a bug: reschedule it
            log.error(
                "delivery.unexpected", message_id=message.msg_id, error_type=type(exc).__name__
            )
            await self._failed(
                message, DeliveryError("INTERNAL", type(exc).__name__, transient=True)
            )
        finally:
            if self.leases is not None:
                await self.leases.release(message.msg_id)

    async def _to_back_office(self, message: OutboxMessage) -> None:
        """Hand an inbound case to our own back office (same retries and dead letters)."""
        url = self.partners.local_system(message.domain)
        materials: list[tuple[str, Callable[[], AsyncIterator[bytes]]]] | None = None
        if orjson.loads(message.payload).get("materials"):  # a partner's case came with them
            stored = [
                m for m in await self.store.case_materials(message.case_id) if m.licence is None
            ]
            materials = [
                (m.code, partial(stored_plaintext, self.store.material_chunks, m)) for m in stored
            ]
        answer = await self.local_client.submit(
            url, message.domain, message.payload, 10.0, materials
        )
        await self.inbound.office_done(message, answer)

    async def _to_partner(self, message: OutboxMessage) -> None:
        lane = self.lane(message.partner)
        partner = self.partners.get(message.partner)
        if not lane.breaker.allows(time.time()):
            await self.service.retry_scheduled(
                message,
                "CIRCUIT_OPEN",
                "the partner's circuit is open",
                max(0.05, lane.breaker.reopens_at() - time.time()),
                counts=False,
            )
            return
        probe = lane.breaker.opened_at is not None  # let through a half-open circuit
        protocol, began, sent_at = "", time.perf_counter(), time.time()
        reply_bytes: int | None = None
        outcome = ""  # "answered" (even with a refusal: the partner is up) or "failed"
        try:
            async with lane.limit:
                if self._stopping:  # shutting down: no new send starts; a later start sends it
                    await self.store.release([message.msg_id], self.owner)
                    return
                if not await self._still_ours(message):
                    return  # its lease ran out while it waited, and another worker has it now
                endpoint = partner.endpoint(message.domain)
                protocol = endpoint.protocol
                client = self.clients[(message.partner, protocol)]
                envelope = env.envelope_from_record(message.envelope)
                age = (env.now_utc() - envelope.created_at).total_seconds()
                if age > self.settings.replay_window_seconds / 2:
                    envelope = await self.service.reseal(message)
                began, sent_at = time.perf_counter(), time.time()
                try:
                    sent = await self._send(
                        client, endpoint.url, envelope, partner.timeout_seconds, message
                    )
                    if sent is None:
                        return  # as above, before its second send
                    reply_envelope = sent
                    reply_bytes = len(reply_envelope.to_json())
                    reply = await self.service.open_reply(message, reply_envelope)
                except SecurityError as exc:
                    # A reply we cannot trust is no answer: retry (the partner de-duplicates).
                    raise DeliveryError(exc.code, exc.message, transient=True) from None
            outcome = "answered"
            self._record_send(message, protocol, began, sent_at, "answered", reply_bytes)
        except DeliveryError as exc:
            outcome = "failed" if exc.transient else "answered"
            if protocol:
                self._record_send(message, protocol, began, sent_at, exc.code, reply_bytes)
            raise
        finally:
            if outcome == "failed":
                lane.breaker.failure(time.time())
            elif outcome == "answered":
                self._partner_answered(lane)
            elif probe:
                # The probe ended otherwise (given up to another worker, a bug, a shutdown): it
                # tells nothing of the partner, and the next attempt may probe again.
                lane.breaker.probing = False
        await self.service.delivered(message, reply, reply_envelope)

    def _partner_answered(self, lane: PartnerLane) -> None:
        was_open = lane.breaker.opened_at is not None
        lane.breaker.success()
        if was_open:  # the messages that waited for the probe's outcome may go now
            self.wake()

    async def _send(
        self,
        client: PartnerClient,
        url: str,
        envelope: env.Envelope,
        timeout: float,
        message: OutboxMessage,
    ) -> env.Envelope | None:
        """The partner's reply, or None if the message's lease was lost before a second send
        (each send must start with half a lease left: see ``partners.check_lease``)."""
        state = {"envelope": envelope}

        async for attempt in RESEAL_ONCE.copy():  # a copy: each send has its own retry state
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    if not await self._still_ours(message):
                        return None
                    state["envelope"] = await self.service.reseal(message)
                return await client.send(
                    url,
                    state["envelope"],
                    timeout,
                    partial(sealed_stream, self.store, message.msg_id),
                )
        raise AssertionError("unreachable")

    def _record_send(
        self,
        message: OutboxMessage,
        protocol: str,
        began: float,
        sent_at: float,
        outcome: str,
        reply_bytes: int | None,
    ) -> None:
        partner = message.partner
        self.metrics.partner_seconds.labels(partner, protocol).observe(time.perf_counter() - began)
        self.metrics.partner_outcomes.labels(partner, protocol, outcome).inc()
        if self.recorder is not None:
            self.recorder.add(
                ExchangeRecord(
                    node=self.settings.node_id,
                    direction="outbound",
                    partner=partner,
                    protocol=protocol,
                    operation=message.kind,
                    matter=message.matter,
                    message_id=message.msg_id,
                    time=sent_at,
                    request_at=sent_at,
                    response_at=time.time(),
                    request_bytes=len(message.envelope),
                    response_bytes=reply_bytes,
                    outcome=outcome,
                )
            )

    def circuits(self) -> dict[str, bool]:
        """Each partner's circuit: open (True) or not, as of now."""
        now = time.time()
        return {
            region: not lane.breaker.may_claim(now)
            for region, lane in self.lanes.items()
            if region != LOCAL
        }

    async def _failed(self, message: OutboxMessage, error: DeliveryError) -> None:
        age = time.time() - message.created
        attempts = message.attempts + 1
        # Every attempt that failed, as a warning an operator can count: a partner whose stack
        # answers in a shape we refuse (REPLY_MALFORMED) may be acting on every copy.
        log.warning(
            "delivery.attempt_failed",
            partner=message.partner,
            message_id=message.msg_id,
            code=error.code,
            attempt=attempts,
            transient=error.transient,
            reached=error.reached,
        )
        if lifecycle.gives_up(
            error.transient,
            attempts,
            age,
            self.settings.delivery_max_attempts,
            self.settings.delivery_max_age_seconds,
        ):
            await self.service.dead(message, error.code, error.message, error.reached)
            self.metrics.dead_letters.labels(message.partner).inc()
            return
        delay = backoff(
            attempts,
            self.settings.delivery_retry_initial_seconds,
            self.settings.delivery_retry_max_seconds,
            self._rng,
        )
        delay = min(delay, max(0.0, self.settings.delivery_max_age_seconds - age))
        await self.service.retry_scheduled(
            message, error.code, error.message, delay, reached=error.reached
        )
        self.metrics.retries.labels(message.partner, error.code).inc()

    async def close_clients(self) -> None:
        for client in self.clients.values():
            await client.close()
        await self.local_client.close()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks.values()), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        try:  # a clean stop: not a dead node (its leases are given back)
            await self.store.forget_owner(self.owner)
        except Exception as exc:  # its heartbeat ages out instead
            log.warning("delivery.forget_failed", error_type=type(exc).__name__)

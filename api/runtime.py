"""The running service's parts, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from domain.auth.service import AuthService
from domain.background import Loop
from domain.clock import Clock, SystemClock
from domain.db.engine import Database, create_engine
from domain.events.service import EventService
from domain.ledger.service import LedgerService
from domain.members.service import MemberService
from domain.programs.service import ProgramService
from domain.redis_store import RedisStore
from domain.segments.engine import SegmentEngine
from domain.segments.service import SegmentService
from domain.segments.tags import TagService
from domain.settings import Settings
from fraud import default_auditor


@dataclass
class Services:
    settings: Settings
    db: Database
    redis: RedisStore
    clock: Clock
    auth: AuthService
    programs: ProgramService
    members: MemberService
    events: EventService
    ledger: LedgerService
    segments: SegmentService
    tags: TagService
    #: Background loops a server process runs (api.app starts them in its lifespan).
    loops: list[Loop] = field(default_factory=list)

    async def close(self) -> None:
        await self.redis.close()
        await self.db.dispose()


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    engine = create_engine(settings.database_url)
    db = Database(engine)
    redis = RedisStore(settings.redis_url, settings.redis_prefix, settings.data_dir)
    auth = AuthService(
        db,
        redis,
        clock,
        settings.require_secret(),
        admin_session_ttl=timedelta(seconds=settings.admin_session_ttl_s),
        member_token_ttl=timedelta(seconds=settings.member_token_ttl_s),
    )
    segments = SegmentEngine()
    services = Services(
        settings=settings,
        db=db,
        redis=redis,
        clock=clock,
        auth=auth,
        programs=ProgramService(db, clock),
        members=MemberService(db, clock, segments),
        events=EventService(db, clock, default_auditor(), in_transaction=segments),
        ledger=LedgerService(db, clock, segments),
        segments=SegmentService(db, clock, segments),
        tags=TagService(db, clock, segments),
    )
    services.loops.extend([])
    return services

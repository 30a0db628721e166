"""The running service's parts, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from domain.analytics.segments import SegmentAnalytics
from domain.auth.service import AuthService
from domain.background import Loop, Runner
from domain.campaigns.delivery import OutboxDelivery
from domain.campaigns.destinations import DestinationPolicy, Resolver
from domain.campaigns.messages import LoggingProvider
from domain.campaigns.service import CampaignService
from domain.campaigns.triggers import TriggerRunner
from domain.campaigns.webhooks import WebhookSender
from domain.changes import MembersChanged, ProgramCalendarChanged, SegmentsChanged
from domain.clock import Clock, SystemClock
from domain.coupons.service import CouponService
from domain.db.engine import Database, create_engine, session_factory
from domain.db.replica import Replica
from domain.events.service import EventService, EventsRecorded, count_events
from domain.experiments.service import ExperimentService
from domain.governance.admins import AdminService
from domain.governance.audit_log import AuditLogService
from domain.ledger.expiry import ExpirySweeper
from domain.ledger.service import LedgerService
from domain.live.bus import LiveBus
from domain.live.relay import ChangeRelay
from domain.live.service import LiveService
from domain.members.erasure import ErasureService
from domain.members.export import MemberExporter
from domain.members.service import MemberService
from domain.messagebus import MessageBus
from domain.ops.metrics import instrument_pool, release_pool
from domain.ops.partition_upkeep import PartitionUpkeep
from domain.ops.statistics import StatisticsCheck
from domain.predict.service import ChurnService
from domain.programs.service import ProgramService
from domain.promotions.service import PromotionService
from domain.redis_store import Lease, RedisStore
from domain.referrals.payout import ReferralPayouts
from domain.referrals.service import ReferralService
from domain.segments.engine import SegmentEngine, count_changes
from domain.segments.scheduler import TimeFlipScheduler
from domain.segments.service import SegmentService
from domain.segments.tags import TagService
from domain.settings import Settings
from domain.tiers.service import LadderCalendar, TierService
from fraud import default_auditor
from fraud.compliance import Compliance, ComplianceSweeper
from fraud.referrals import ReferralRules
from fraud.review import ReviewService
from fraud.settings import FraudSettingsService
from gamification.challenges.awarding import ChallengeAwarder
from gamification.challenges.service import ChallengeService
from gamification.leaderboards.feeder import StandingsFeeder
from gamification.leaderboards.segment_scope import SegmentBoards
from gamification.leaderboards.service import LeaderboardService
from gamification.leaderboards.snapshots import PeriodCloser
from gamification.rewards.service import RewardService


@dataclass
class Services:
    settings: Settings
    db: Database
    redis: RedisStore
    clock: Clock
    auth: AuthService
    programs: ProgramService
    members: MemberService
    #: eraseMember (docs/privacy.md)
    erasure: ErasureService
    #: exportMember and `loyalty members export` (docs/privacy.md)
    exports: MemberExporter
    events: EventService
    ledger: LedgerService
    segments: SegmentService
    tags: TagService
    campaigns: CampaignService
    bus: LiveBus
    live: LiveService
    relay: ChangeRelay
    leaderboards: LeaderboardService
    challenges: ChallengeService
    rewards: RewardService
    #: Coupon pools, Member.coupons, the till's validateCoupon / redeemCoupon (docs/promotions.md)
    coupons: CouponService
    #: Promotions: definitions and simulatePromotion (docs/promotions.md)
    promotions: PromotionService
    review: ReviewService
    fraud_settings: FraudSettingsService
    compliance: Compliance
    analytics: SegmentAnalytics
    churn: ChurnService
    experiments: ExperimentService
    tiers: TierService
    audit_log: AuditLogService
    admins: AdminService
    #: The risks to table statistics, for the log at start and for /readyz.
    statistics: StatisticsCheck
    #: Posts EXPIRY entries for due lots (a background loop; `loyalty points expire` drains it).
    expiry: ExpirySweeper
    #: Referral settings, listings and reviewers' decisions (docs/promotions.md, "Referrals").
    referrals: ReferralService
    #: Pays referrers whose wait has passed (a background loop; tests drain it with their clock).
    referral_payouts: ReferralPayouts
    #: Background loops a server process runs (`start` runs them; tests call `run_once` themselves).
    loops: list[Loop] = field(default_factory=list)
    _runner: Runner | None = None
    #: What this process's pool added to loyalty_db_pool_size.
    _pool_size: int = 0

    async def start(self) -> None:
        """Serve live: the Redis bus, and the background loops (relay, scheduler, delivery) unless
        the settings turn them off for this process. Logs the risks to table statistics first."""
        await self.statistics.refresh()
        self._runner = Runner(self.loops if self.settings.background else [])
        await self.bus.start(self._runner.wake)
        self._runner.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()
            self._runner = None
            for loop in self.loops:  # another process takes over at once, not when the lease lapses
                lease = getattr(loop, "lease", None)
                if isinstance(lease, Lease):
                    await lease.release()
        await self.bus.stop()

    async def close(self) -> None:
        await self.stop()
        await self.redis.close()
        await self.db.dispose()
        release_pool(self._pool_size)
        self._pool_size = 0


def wire_handlers(bus: MessageBus, segments: SegmentEngine) -> None:
    """The message bus's handlers (domain/messagebus.py), in the order they run for one event."""
    triggers, boards = TriggerRunner(), SegmentBoards()
    segments.watchers = (triggers, boards)
    bus.handle(MembersChanged, segments.handle, name="segment engine")
    # the ladder first: the segments recomputed in the new zone may read the tiers
    bus.handle(ProgramCalendarChanged, LadderCalendar(segments).calendar_changed, name="tiers: local dates")
    bus.handle(ProgramCalendarChanged, segments.calendar_changed, name="segment engine: local dates")
    bus.handle(MembersChanged, ChallengeAwarder().members_changed, name="challenges")
    bus.handle(SegmentsChanged, triggers.segments_changed, cascades=True, name="trigger")
    bus.handle(SegmentsChanged, boards.segments_changed, name="segment-scoped boards")
    bus.after_commit(SegmentsChanged, count_changes)
    bus.after_commit(EventsRecorded, count_events)


def build_replica(settings: Settings, clock: Clock) -> Replica | None:
    """LOYALTY_DATABASE_REPLICA_URL's replica, with a pool as large as the primary's; None without one."""
    if not settings.database_replica_url:
        return None
    engine = create_engine(
        settings.database_replica_url,
        pool_size=settings.db_pool_size,
        connect_timeout_s=settings.replica_connect_timeout_s,
    )
    return Replica(engine, session_factory(engine), clock, timedelta(seconds=settings.replica_recheck_s))


def build_services(
    settings: Settings, clock: Clock | None = None, resolver: Resolver | None = None
) -> Services:
    """The parts, wired; `clock` and `resolver` (DNS, for webhook destinations) default to the system's."""
    clock = clock or SystemClock()
    destinations = DestinationPolicy(settings.webhook_allow, resolver)
    engine = create_engine(settings.require_database_url(), pool_size=settings.db_pool_size)
    db = Database(engine, replica=build_replica(settings, clock))
    # both pools count in the loyalty_db_pool_* metrics
    pooled_engines = [engine] if db.replica is None else [engine, db.replica.engine]
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
    wire_handlers(db.bus, segments)
    bus = LiveBus(redis, db, queue_capacity=settings.subscriber_queue)
    db.on_commit = bus.announce
    ledger = LedgerService(db, clock)
    compliance = Compliance()
    events = EventService(db, clock, default_auditor(clock), compliance, lock_scope=segments)
    services = Services(
        settings=settings,
        db=db,
        redis=redis,
        clock=clock,
        auth=auth,
        programs=ProgramService(db, clock),
        members=MemberService(db, clock, ReferralRules()),
        erasure=ErasureService(db, clock, segments),
        exports=MemberExporter(db, clock),
        events=events,
        ledger=ledger,
        segments=SegmentService(db, clock, segments),
        tags=TagService(db, clock),
        campaigns=CampaignService(db, clock, destinations),
        bus=bus,
        live=LiveService(db, bus),
        relay=ChangeRelay(db, redis, clock),
        leaderboards=LeaderboardService(db, redis, clock),
        challenges=ChallengeService(db, clock),
        rewards=RewardService(db, clock, ledger),
        coupons=CouponService(db, clock, events),
        promotions=PromotionService(db, clock),
        review=ReviewService(db, clock, compliance),
        fraud_settings=FraudSettingsService(db, clock),
        compliance=compliance,
        analytics=SegmentAnalytics(db, clock),
        churn=ChurnService(db, clock, segments),
        experiments=ExperimentService(db, clock),
        tiers=TierService(db, clock, segments),
        audit_log=AuditLogService(db),
        admins=AdminService(db, clock),
        statistics=StatisticsCheck(db, clock),
        expiry=ExpirySweeper(db, clock),
        referrals=ReferralService(db, clock),
        referral_payouts=ReferralPayouts(db, clock),
        _pool_size=sum(instrument_pool(pooled) for pooled in pooled_engines),
    )
    services.loops.extend(
        [
            services.relay,
            TimeFlipScheduler(db, clock, segments),
            services.expiry,
            OutboxDelivery(db, clock, LoggingProvider(), WebhookSender(destinations)),
            StandingsFeeder(db, redis, clock),
            PeriodCloser(db, clock),
            ComplianceSweeper(db, clock, compliance),
            services.referral_payouts,
            PartitionUpkeep(db, clock),
        ]
    )
    return services

"""Who may call what: one table of API operation -> requirement, checked by `authorize`.

Every root Query, Mutation and Subscription field has exactly one entry (tests walk the served
schema); the API applies `authorize` to every root field in one place (api/authorization.py), so no
resolver checks scopes itself. An operation without an entry is refused: the table fails closed.

Which admin role holds which scope is domain/auth/roles.py. What a member token may see *within* an
operation open to it (only itself, public boards, active rewards) is the service's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.auth.principal import Principal, PrincipalKind
from domain.auth.scopes import Scope
from domain.errors import Forbidden


@dataclass(frozen=True)
class Requirement:
    """What a caller needs for one operation."""

    #: The scope an admin or API key must hold; None: no scope.
    scope: Scope | None = None
    #: A member token may call it too (the service narrows it to the member's own data).
    members: bool = False
    #: Only a member token may call it.
    members_only: bool = False
    #: Only an admin session may call it (an API key cannot, even holding the scope).
    admins_only: bool = False
    #: Anyone, unauthenticated included.
    public: bool = False

    def describe(self) -> str:
        """For docs and errors: e.g. "segments:write", "members:read or a member token"."""
        if self.public:
            return "anyone"
        if self.members_only:
            return "a member token"
        who = "an admin session" if self.admins_only else ""
        text = " with ".join(p for p in (who, self.scope.value if self.scope else "") if p)
        return f"{text} or a member token" if self.members else text


def needs(scope: Scope, *, members: bool = False) -> Requirement:
    return Requirement(scope=scope, members=members)


def admin(scope: Scope | None = None) -> Requirement:
    return Requirement(scope=scope, admins_only=True)


PUBLIC = Requirement(public=True)
MEMBER = Requirement(members_only=True)

#: Every API operation (root field name) and what it needs.
OPERATIONS: dict[str, Requirement] = {
    # --- sessions and tokens
    "login": PUBLIC,
    "logout": admin(),
    "verifyTotp": admin(),
    "issueMemberToken": needs(Scope.TOKENS_ISSUE),
    "me": MEMBER,
    # --- members and organizations
    "member": needs(Scope.MEMBERS_READ, members=True),
    "members": needs(Scope.MEMBERS_READ),
    "upsertOrganizations": needs(Scope.MEMBERS_WRITE),
    "upsertMembers": needs(Scope.MEMBERS_WRITE),
    "recordEvents": needs(Scope.EVENTS_WRITE),
    # --- program settings and earning rules
    "program": needs(Scope.PROGRAM_READ),
    "earningRules": needs(Scope.PROGRAM_READ),
    "setEarningRule": needs(Scope.PROGRAM_WRITE),
    "setLifecycleThresholds": needs(Scope.PROGRAM_WRITE),
    "setMaxEventAge": needs(Scope.PROGRAM_WRITE),
    "setPointsExpiry": needs(Scope.PROGRAM_WRITE),
    "setAdjustmentStepUp": needs(Scope.PROGRAM_WRITE),
    "setProgramTimezone": needs(Scope.PROGRAM_WRITE),
    # --- referrals (codes and signups: Member.referralCode, upsertMembers)
    "referralProgram": needs(Scope.PROGRAM_READ),
    "referrals": needs(Scope.MEMBERS_READ),
    "setReferralProgram": needs(Scope.MARKETING_WRITE),
    "decideReferral": admin(Scope.FRAUD_REVIEW),
    # --- points
    "redeemPoints": needs(Scope.POINTS_REDEEM, members=True),
    "adjustPoints": needs(Scope.POINTS_ADJUST),
    "reverseLedgerEntry": needs(Scope.POINTS_ADJUST),
    # --- segments, tags, tiers, analytics, churn
    "previewSegment": needs(Scope.SEGMENTS_READ),
    "segment": needs(Scope.SEGMENTS_READ),
    "segments": needs(Scope.SEGMENTS_READ),
    "segmentAnalytics": needs(Scope.SEGMENTS_READ),
    "segmentBreakdown": needs(Scope.SEGMENTS_READ),
    "segmentOverlap": needs(Scope.SEGMENTS_READ),
    "segmentChanges": needs(Scope.SEGMENTS_READ),
    "createSegment": needs(Scope.SEGMENTS_WRITE),
    "updateSegment": needs(Scope.SEGMENTS_WRITE),
    "deleteSegment": needs(Scope.SEGMENTS_WRITE),
    "importStaticSegment": needs(Scope.SEGMENTS_WRITE),
    "changeStaticSegment": needs(Scope.SEGMENTS_WRITE),
    "recomputeSegments": needs(Scope.SEGMENTS_WRITE),
    "addTag": needs(Scope.SEGMENTS_WRITE),
    "removeTag": needs(Scope.SEGMENTS_WRITE),
    "tierLadder": needs(Scope.PROGRAM_READ),
    "setTierLadder": needs(Scope.SEGMENTS_WRITE),
    "deleteTierLadder": needs(Scope.SEGMENTS_WRITE),
    "churnModel": needs(Scope.SEGMENTS_READ),
    "trainChurnModel": needs(Scope.SEGMENTS_WRITE),
    # --- triggers, messages, webhooks
    "setSegmentTriggers": needs(Scope.SEGMENTS_WRITE),
    "messages": needs(Scope.SEGMENTS_READ),
    "webhookEndpoints": needs(Scope.SEGMENTS_READ),
    "deliveries": needs(Scope.SEGMENTS_READ),
    "createWebhookEndpoint": needs(Scope.WEBHOOKS_MANAGE),
    "deactivateWebhookEndpoint": needs(Scope.WEBHOOKS_MANAGE),
    "rotateWebhookSecret": needs(Scope.WEBHOOKS_MANAGE),
    "retryDelivery": needs(Scope.WEBHOOKS_MANAGE),
    # --- experiments
    "experiment": needs(Scope.SEGMENTS_READ),
    "experiments": needs(Scope.SEGMENTS_READ),
    "experimentResults": needs(Scope.SEGMENTS_READ),
    "createExperiment": needs(Scope.SEGMENTS_WRITE),
    "updateExperiment": needs(Scope.SEGMENTS_WRITE),
    "exposeExperiment": needs(Scope.SEGMENTS_WRITE),
    "exposeExperimentMember": needs(Scope.MEMBERS_WRITE, members=True),
    # --- boards, challenges, rewards
    "leaderboard": needs(Scope.LEADERBOARDS_READ, members=True),
    "leaderboards": needs(Scope.LEADERBOARDS_READ, members=True),
    "leaderboardDefinitions": needs(Scope.LEADERBOARDS_READ),
    "setLeaderboard": needs(Scope.MARKETING_WRITE),
    "deleteLeaderboard": needs(Scope.MARKETING_WRITE),
    "challenges": needs(Scope.PROGRAM_READ, members=True),
    "setChallenge": needs(Scope.MARKETING_WRITE),
    "deleteChallenge": needs(Scope.MARKETING_WRITE),
    "rewards": needs(Scope.MEMBERS_READ, members=True),
    "reward": needs(Scope.MEMBERS_READ, members=True),
    "setReward": needs(Scope.MARKETING_WRITE),
    "restockReward": needs(Scope.MARKETING_WRITE),
    "setRewardWindow": needs(Scope.MARKETING_WRITE),
    "removeRewardWindow": needs(Scope.MARKETING_WRITE),
    "redeemReward": needs(Scope.POINTS_REDEEM, members=True),
    # --- coupons
    "couponPools": needs(Scope.PROGRAM_READ),
    "couponPool": needs(Scope.PROGRAM_READ),
    "setCouponPool": needs(Scope.MARKETING_WRITE),
    "generateCoupons": needs(Scope.MARKETING_WRITE),
    "importCoupons": needs(Scope.MARKETING_WRITE),
    "validateCoupon": needs(Scope.COUPONS_REDEEM),
    "redeemCoupon": needs(Scope.COUPONS_REDEEM),
    # --- promotions
    "promotions": needs(Scope.PROGRAM_READ),
    "simulatePromotion": needs(Scope.PROGRAM_READ),
    "createPromotion": needs(Scope.MARKETING_WRITE),
    "updatePromotion": needs(Scope.MARKETING_WRITE),
    "setPromotionActive": needs(Scope.MARKETING_WRITE),
    # --- fraud
    "reviewQueue": admin(Scope.FRAUD_REVIEW),
    "approveAccrual": admin(Scope.FRAUD_REVIEW),
    "rejectAccrual": admin(Scope.FRAUD_REVIEW),
    "fraudRules": needs(Scope.FRAUD_CONFIGURE),
    "setFraudRule": needs(Scope.FRAUD_CONFIGURE),
    # --- governance
    "currentAdmin": admin(),
    "admins": admin(Scope.ADMINS_MANAGE),
    "createAdmin": admin(Scope.ADMINS_MANAGE),
    "setAdminRole": admin(Scope.ADMINS_MANAGE),
    "auditLog": needs(Scope.AUDIT_READ),
    "eraseMember": needs(Scope.MEMBERS_ERASE),
    "exportMember": needs(Scope.MEMBERS_EXPORT),
}


def requirement(operation: str) -> Requirement:
    """The operation's entry; FORBIDDEN when it has none (a new field must be added to the table)."""
    found = OPERATIONS.get(operation)
    if found is None:
        raise Forbidden(f"{operation} has no authorization rule (domain/auth/policy.py)")
    return found


def authorize(operation: str, principal: Principal) -> None:
    """FORBIDDEN unless `principal` may call `operation`; the message names what it needs."""
    needed = requirement(operation)
    if needed.public:
        return
    if principal.kind == PrincipalKind.MEMBER:
        if needed.members or needed.members_only:
            return
        raise Forbidden(f"{operation} is not open to member tokens; it needs {needed.describe()}")
    if needed.members_only:
        raise Forbidden(f"{operation} needs a member token")
    if needed.admins_only and principal.kind != PrincipalKind.ADMIN:
        raise Forbidden(f"{operation} needs an admin session; API keys cannot call it")
    if needed.scope is not None:
        principal.require(needed.scope, operation)

"""segmentChanges: every committed ENTERED/LEFT, live over graphql-transport-ws."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from starlette.websockets import WebSocket

from api.context import Info
from api.types.segments import SegmentChangeEvent
from domain.live.bus import SubscriptionInterrupted

#: Close code for a subscription the server cannot go on serving in order: it fell too far behind,
#: or its process missed changes it could not replay. The reason names the cursor to resume from
#: (application range 4000-4999).
CLOSE_RESUME = 4008


@strawberry.type
class LiveSubscriptions:
    @strawberry.subscription(
        description=(
            "Segment changes as they commit, in commit order per member; all segments when "
            "segmentKeys is null. `since` (a change's cursor) replays what was missed first. "
            "A subscriber more than LOYALTY_SUBSCRIBER_QUEUE changes behind, or one whose server "
            "missed changes it could not replay, is closed with code 4008 and the cursor to resume from."
        )
    )
    async def segment_changes(
        self, info: Info, segment_keys: list[str] | None = None, since: str | None = None
    ) -> AsyncGenerator[SegmentChangeEvent, None]:
        program_id = info.context.principal.program_id
        try:
            async for change in info.context.services.live.stream(program_id, segment_keys, since):
                yield SegmentChangeEvent.of(change)
        except SubscriptionInterrupted as interrupted:
            socket = info.context.request
            if isinstance(socket, WebSocket):
                await socket.close(code=CLOSE_RESUME, reason=interrupted.message)

"""Reading and changing a program's fraud rule configuration (admins; GraphQL in api/fraud.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database, announce
from domain.models import FraudRuleSetting
from fraud.config import SPECS, RuleSettings, load_config, parse_params, spec_of


@dataclass(frozen=True)
class RuleView:
    name: str
    summary: str
    enabled: bool
    shadow: bool
    params: Mapping[str, float]
    defaults: Mapping[str, float]
    updated_by: str | None


def _view(settings: RuleSettings) -> RuleView:
    spec = SPECS[settings.name]
    return RuleView(
        settings.name,
        spec.summary,
        settings.enabled,
        settings.shadow,
        dict(settings.params),
        dict(settings.defaults),
        settings.updated_by,
    )


class FraudSettingsService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def rules(self, program_id: int) -> list[RuleView]:
        async with self.db.read() as session:
            config = await load_config(session, program_id)
        return [_view(config[name]) for name in SPECS]

    async def set_rule(
        self,
        program_id: int,
        name: str,
        *,
        enabled: bool | None = None,
        shadow: bool | None = None,
        params: object = None,
        by: str,
    ) -> RuleView:
        """Change what is given; the rest keeps its current value. Takes effect with the next batch."""
        spec_of(name)
        async with self.db.unit_of_work() as uow:
            current = (await load_config(uow.session, program_id))[name]
            updated = RuleSettings(
                name,
                current.enabled if enabled is None else enabled,
                current.shadow if shadow is None else shadow,
                parse_params(name, params, current.params),
                by,
                current.defaults,
            )
            table = FraudRuleSetting.__table__
            row = {
                "program_id": program_id,
                "rule": name,
                "enabled": updated.enabled,
                "shadow": updated.shadow,
                "params": dict(updated.params),
                "updated_at": self.clock.now(),
                "updated_by": by[:200],
            }
            statement = insert_for(uow.session, table).values(row)
            await uow.session.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.program_id, table.c.rule],
                    set_={
                        k: statement.excluded[k]
                        for k in ("enabled", "shadow", "params", "updated_at", "updated_by")
                    },
                )
            )
            if name == "non_compliant":
                announce(uow.session, "fraud-settings")  # the sweeper re-tags with the new threshold
        return _view(updated)

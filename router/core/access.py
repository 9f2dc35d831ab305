"""Access control: which permissions a principal's roles grant. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .events import Principal

__all__ = ["Policy", "Principal"]


class Policy:
    """Maps roles to the permissions they grant.

    A role not named in the policy grants exactly the permission of its own name, so a
    tool may simply require a role (``permissions={"analyst"}``).
    """

    __slots__ = ("_grants",)

    def __init__(self, grants: Mapping[str, Iterable[str]] | None = None) -> None:
        self._grants = {role: frozenset(perms) for role, perms in (grants or {}).items()}

    def grants(self) -> dict[str, frozenset[str]]:
        return dict(self._grants)

    def permissions(self, principal: Principal) -> frozenset[str]:
        out: set[str] = set()
        for role in principal.roles:
            out |= self._grants.get(role, frozenset((role,)))
        return frozenset(out)

    def missing(self, principal: Principal, required: frozenset[str]) -> tuple[str, ...]:
        """The required permissions the principal lacks, sorted; empty means allowed."""
        if not required:
            return ()
        return tuple(sorted(required - self.permissions(principal)))

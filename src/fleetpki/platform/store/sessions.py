"""Web console sessions: one row per sign-in, found by the SHA-256 of the cookie's token.

A session made with a project API key is valid only while that key exists: revoking the key
deletes its sessions, and every lookup joins the key as well. Admin sessions carry a tag
derived from the admin key and the token, so a restart with another admin key ends them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from fleetpki.platform.store.base import StoreBase, utcnow
from fleetpki.platform.store.schema import api_keys, console_sessions


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console session (admin when ``project_id`` is None)."""

    token_hash: str
    api_key_id: str | None
    project_id: str | None
    admin_tag: str | None
    expires_at: dt.datetime  # idle deadline, pushed back while the session is used
    ends_at: dt.datetime  # absolute deadline

    @property
    def admin(self) -> bool:
        return self.api_key_id is None


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class SessionStore(StoreBase):
    """Console sessions of the store."""

    def create_console_session(
        self,
        token_hash: str,
        *,
        api_key_id: str | None,
        project_id: str | None,
        admin_tag: str | None,
        idle: dt.timedelta,
        lifetime: dt.timedelta,
    ) -> ConsoleSession:
        """Record a new sign-in (and forget sessions that have expired)."""
        now = utcnow()
        session = ConsoleSession(
            token_hash, api_key_id, project_id, admin_tag, now + idle, now + lifetime
        )
        with self.engine.begin() as conn:
            conn.execute(
                console_sessions.delete().where(
                    sa.or_(console_sessions.c.expires_at <= now, console_sessions.c.ends_at <= now)
                )
            )
            conn.execute(
                console_sessions.insert().values(
                    id=token_hash,
                    api_key_id=api_key_id,
                    project_id=project_id,
                    admin_tag=admin_tag,
                    created_at=now,
                    expires_at=session.expires_at,
                    ends_at=session.ends_at,
                )
            )
        return session

    def console_session(self, token_hash: str) -> ConsoleSession | None:
        """The live session with this token hash, or None (unknown, expired, key revoked)."""
        now = utcnow()
        s, k = console_sessions, api_keys
        query = (
            sa.select(s)
            .select_from(s.outerjoin(k, k.c.id == s.c.api_key_id))
            .where(
                s.c.id == token_hash,
                s.c.expires_at > now,
                s.c.ends_at > now,
                sa.or_(
                    s.c.api_key_id.is_(None),
                    sa.and_(k.c.id.is_not(None), k.c.project_id == s.c.project_id),
                ),
            )
        )
        with self.reader.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return ConsoleSession(
            row.id,
            row.api_key_id,
            row.project_id,
            row.admin_tag,
            _utc(row.expires_at),
            _utc(row.ends_at),
        )

    def extend_console_session(self, token_hash: str, expires_at: dt.datetime) -> None:
        """Push the idle deadline of a session back (``ends_at`` still bounds it)."""
        s = console_sessions
        with self.engine.begin() as conn:
            conn.execute(s.update().where(s.c.id == token_hash).values(expires_at=expires_at))

    def end_console_session(self, token_hash: str) -> None:
        """Sign out: the session is gone for every instance sharing the database."""
        with self.engine.begin() as conn:
            conn.execute(console_sessions.delete().where(console_sessions.c.id == token_hash))

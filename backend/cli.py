"""The ``crosslens`` command: ``serve``, ``users add|list|revoke`` (and ``demo`` when present).

``serve`` starts the API (uvicorn) and the UI (waitress) as two child processes configured
only by ``CROSSLENS_*`` environment variables, the same way containers run them, prints one
login link for the admin on its own stdout line, and stops both on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from backend.core.config import Settings
from backend.core.security import (
    ensure_project,
    ensure_user,
    grant,
    mint_token,
    revoke_user_tokens,
)
from backend.db import ROLES, Database, User

ADMIN_NAME = "admin"


def _settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in {
        "host": getattr(args, "host", None), "api_port": getattr(args, "api_port", None),
        "ui_port": getattr(args, "ui_port", None), "data_dir": getattr(args, "data_dir", None),
    }.items() if v is not None}
    return Settings(**overrides)


def _database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.create_all()
    return db


def admin_login_token(settings: Settings) -> str:
    """A fresh token for the global admin (valid until revoked)."""
    db = _database(settings)
    try:
        with db.session() as session:
            admin = ensure_user(session, ADMIN_NAME, is_admin=True)
            return mint_token(session, admin, label="serve login link")
    finally:
        db.dispose()


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "CROSSLENS_HOST": settings.host,
        "CROSSLENS_API_PORT": str(settings.api_port),
        "CROSSLENS_UI_PORT": str(settings.ui_port),
        "CROSSLENS_DATA_DIR": str(settings.data_dir.resolve()),
        "CROSSLENS_API_URL": settings.resolved_api_url,
        "OMP_WAIT_POLICY": env.get("OMP_WAIT_POLICY", "PASSIVE"),
    })
    if settings.database_url:
        env["CROSSLENS_DATABASE_URL"] = settings.database_url
    return env


def _wait_until_up(url: str, procs: list[subprocess.Popen], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a crosslens process exited during start; see its log above")
        try:
            if httpx.get(url, timeout=2, follow_redirects=False).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    token = admin_login_token(settings)
    env = _child_env(settings)
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "backend.main:app_from_env",
                            "--factory", "--host", settings.host,
                            "--port", str(settings.api_port)], env=env)
    ui = subprocess.Popen([sys.executable, "-m", "app.main"], env=env)
    procs = [api, ui]

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        _wait_until_up(f"{settings.resolved_api_url}/health", procs)
        _wait_until_up(f"{settings.ui_url}/login", procs)
        print(f"crosslens API at {settings.resolved_api_url} (OpenAPI schema, with a token: "
              f"{settings.resolved_api_url}/api/v1/openapi.json)", flush=True)
        print("Open this login link (admin; valid until revoked):", flush=True)
        print(f"{settings.ui_url}/?token={token}", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1  # one of the two died: stop the other and say so
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"crosslens serve: {exc}", file=sys.stderr)
        return 1
    finally:
        stop()


def cmd_users(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    db = _database(settings)
    try:
        with db.session() as session:
            if args.users_cmd == "add":
                user = ensure_user(session, args.name, is_admin=args.admin)
                if args.project:
                    grant(session, user, ensure_project(session, args.project), args.role)
                print(mint_token(session, user, label="users add"))
            elif args.users_cmd == "list":
                for user in session.scalars(select(User).order_by(User.name)):
                    live = sum(t.revoked_at is None for t in user.tokens)
                    roles = ", ".join(f"{m.project.name}:{m.role}" for m in user.memberships)
                    flag = " (global admin)" if user.is_admin else ""
                    print(f"{user.name}{flag}\ttokens={live}\t{roles}")
            elif args.users_cmd == "revoke":
                user = session.scalar(select(User).where(User.name == args.name))
                if user is None:
                    print(f"no user {args.name!r}", file=sys.stderr)
                    return 2
                print(f"revoked {revoke_user_tokens(session, user)} token(s) of {user.name}")
    finally:
        db.dispose()
    return 0


# -- demo (zoo): regenerate the shipped demo weights ------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """``crosslens demo train``: retrain every demo scenario's models (deterministic)."""
    from estimators.zoo.scenarios import list_scenarios, unavailable
    from estimators.zoo.train import train_all

    if args.demo_cmd == "list":
        for scenario in list_scenarios():
            models = ", ".join(f"{m.name} {m.test_accuracy:.3f}" for m in scenario.models)
            print(f"{scenario.name}\t{scenario.title}\t{models or 'not trained'}")
        for name, how in unavailable().items():
            print(f"{name}\tnot available here\tneeds {how}")
        return 0
    try:
        train_all(args.out, names=args.scenario or None)
    except KeyError as exc:
        print(f"crosslens demo train: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="demo scenarios: list them, retrain their models")
    demo_sub = demo.add_subparsers(dest="demo_cmd", required=True)
    train = demo_sub.add_parser("train", help="retrain the demo models and write their "
                                "weights (default: the package's shipped weights)")
    train.add_argument("--out", type=Path, help="write <out>/<scenario>/ instead of the "
                       "package's estimators/zoo/weights/")
    train.add_argument("--scenario", action="append",
                       help="train only this scenario (repeatable; default: all)")
    demo_sub.add_parser("list", help="list the scenarios and their models' test accuracy")
    demo.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crosslens", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the API and the UI, print a login link")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--api-port", type=int, help="API port (default 8000)")
    serve.add_argument("--ui-port", type=int, help="UI port (default 8050)")
    serve.add_argument("--data-dir", type=Path, help="data directory (default ./.crosslens)")
    serve.set_defaults(func=cmd_serve)

    users = sub.add_parser("users", help="manage users and their tokens")
    users.add_argument("--data-dir", type=Path, help="data directory (default ./.crosslens)")
    users_sub = users.add_subparsers(dest="users_cmd", required=True)
    add = users_sub.add_parser("add", help="create a user (or a new token) and print a token")
    add.add_argument("name")
    add.add_argument("--project", help="grant a role in this project (created if missing)")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument("--admin", action="store_true", help="make the user a global admin")
    users_sub.add_parser("list", help="list users, live tokens and roles")
    revoke = users_sub.add_parser("revoke", help="revoke all tokens of a user")
    revoke.add_argument("name")
    users.set_defaults(func=cmd_users)
    _add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

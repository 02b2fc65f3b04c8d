"""``measure serve``: load the model once, then serve the live page with uvicorn.

Starlette and uvicorn come with the ``serve`` extra; they are imported only when the command
runs, so the rest of the command line works without them.

As Jupyter Server does, it makes a launch token and prints the page's address with it; every
request must carry it, and the Host header must name an allowed host whatever the bound address
(:mod:`measure.serve.guard`).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import secrets
import sys

SERVE_HELP = "a local web page: type a problem and an update, watch every condition adapt token by token"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
#: A chosen --token: letters, digits, - and _ (it travels in URLs and headers as it is).
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,200}")


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help=SERVE_HELP, description=SERVE_HELP)
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--model", default=None, help="as in `measure run` (default: the embedded SmolLM2)")
    serve.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    serve.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    serve.add_argument("--trust-remote-code", action="store_true")
    serve.add_argument("--data-dir", help="dataset folder, to pick augmented MAWPS/SVAMP/GSM8K or QA pairs")
    serve.add_argument("--pairs", action="append", default=[], metavar="FILE",
                       help="a .json/.jsonl file of pairs to pick from (e.g. from `measure augment`); repeatable")
    serve.add_argument("--runs-dir", default="reports",
                       help="folder whose run folders can be watched or give a calibration (default reports)")
    serve.add_argument("--watch", action="append", default=[], metavar="DIR",
                       help="a further run folder to offer (also one being written); repeatable")
    serve.add_argument("--max-waiting", type=int, default=2,
                       help="experiments that may wait while one runs; more are refused (default 2)")
    serve.add_argument("--max-new-tokens-limit", type=int, default=None,
                       help="largest token budget a page may ask for (default 256)")
    serve.add_argument("--token", default=None,
                       help="the launch token every request must carry (default: a new random one, printed "
                            "in the page's address); 16-200 letters, digits, - or _")
    serve.add_argument("--no-token", action="store_true",
                       help="accept requests without the token (any program or page on this machine can then "
                            "run experiments and read the listed run folders)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="a further Host name the page may be reached by (the loopback names and the bound "
                            "address are always allowed); repeatable; needed with --host 0.0.0.0")
    serve.add_argument("--no-warm-up", action="store_true",
                       help="skip the short experiment run at start-up (the first page experiment is then slower)")
    serve.set_defaults(func=serve_command)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """What to tell a user who binds beyond this machine (None on loopback)."""
    if is_loopback(host):
        return None
    return (f"measure serve: warning: binding {host}:{port} exposes the page beyond this machine. Anyone who can "
            "reach it and knows the token can run experiments on the model and read the run folders it lists, "
            "and the token travels unencrypted (plain HTTP). Use the default --host 127.0.0.1 unless this "
            "network is yours alone.")


def launch_token(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(the token to require or None, an error for a bad --token or None)."""
    if args.no_token:
        return None, None
    if args.token is None:
        return secrets.token_hex(24), None
    if not TOKEN_PATTERN.fullmatch(args.token):
        return None, "--token must be 16 to 200 letters, digits, - or _"
    return args.token, None


def serve_command(args: argparse.Namespace) -> int:
    try:  # uvicorn and Starlette come with the optional serve extra: say so when they are missing
        import uvicorn

        from measure.serve.app import create_app
        from measure.serve.guard import allowed_hosts
    except ImportError as missing:
        print(f"measure serve: error: {missing.name} is not installed; install the serve extra: "
              "pip install -e '.[serve]'", file=sys.stderr)
        return 2
    # torch and the engine: loaded for this command only, so `measure --help` starts fast
    from measure.model.load import EMBEDDED_MODEL, ModelLoadError, load_model
    from measure.serve.requests import MAX_NEW_TOKENS

    if args.max_new_tokens_limit is None:
        args.max_new_tokens_limit = MAX_NEW_TOKENS

    if not 0 <= args.port <= 65535:
        print(f"measure serve: error: --port {args.port} is not a port number (0-65535)", file=sys.stderr)
        return 2
    if args.max_waiting < 0 or args.max_new_tokens_limit < 2:
        print("measure serve: error: --max-waiting must be >= 0 and --max-new-tokens-limit >= 2", file=sys.stderr)
        return 2
    token, problem = launch_token(args)
    if problem:
        print(f"measure serve: error: {problem}", file=sys.stderr)
        return 2
    if args.no_token:
        print("measure serve: warning: --no-token: any program or web page that can reach this port may run "
              "experiments and read the listed run folders (Host and Origin are still checked)", file=sys.stderr)
    hosts = allowed_hosts(args.host, tuple(args.allow_host))
    warning = exposure_warning(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr)
    model = args.model or EMBEDDED_MODEL
    print(f"measure serve: loading {model} on {args.device} ({args.dtype})", file=sys.stderr)
    try:
        loaded = load_model(model, args.device, args.dtype, args.trust_remote_code)
    except (ModelLoadError, ValueError) as err:
        print(f"measure serve: error: {err}", file=sys.stderr)
        return 2
    if not args.no_warm_up:
        from measure.serve.live import warm_up  # the engine (torch), as above

        print("measure serve: warming the model up (one short experiment)", file=sys.stderr, flush=True)
        print(f"measure serve: warm in {warm_up(loaded):.1f} s", file=sys.stderr, flush=True)
    app = create_app(loaded, token=token, data_dir=args.data_dir, pair_files=tuple(args.pairs),
                     runs_root=args.runs_dir, watch=tuple(args.watch), max_waiting=args.max_waiting,
                     max_new_tokens=args.max_new_tokens_limit, allowed_hosts=hosts)
    # Event streams stay open while a page is; on Ctrl-C they are closed after a short grace.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    _announce_when_listening(server, args.host, token)
    server.run()
    return 0


def page_address(host: str, port: int, token: str | None) -> str:
    """The address to open: a wildcard bind is opened on loopback; the token as ?token=."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1"
    except ValueError:
        pass
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def _announce_when_listening(server, host: str, token: str | None) -> None:
    """Print the page's address once uvicorn listens (with --port 0 the port is known only then)."""
    startup = server.startup

    async def announced_startup(*args, **kwargs):
        await startup(*args, **kwargs)
        for listener in getattr(server, "servers", []):
            for sock in listener.sockets:
                port = sock.getsockname()[1]
                print(f"measure serve: open {page_address(host, port, token)} (Ctrl-C to stop)",
                      file=sys.stderr, flush=True)
                return

    server.startup = announced_startup

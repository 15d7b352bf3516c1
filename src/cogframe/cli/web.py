"""``cogframe web``: the browser demo (Gradio; ``pip install 'cogframe[web]'``).

Serves the page of :mod:`cogframe.cli.web_app` on ``--host``/``--port`` (default
127.0.0.1:7860, this machine only) until Ctrl-C. Every request runs the sampling recipe
(``--recipe``, default ``tiny/sample``, plus any ``KEY=VALUE`` overrides) through the same code
as ``cogframe run tiny/sample``. Nothing is fetched from the network: Gradio's analytics are off
and the page uses the system fonts.
"""

from __future__ import annotations

import argparse
import os

NAME = "web"
HELP = "Browser demo: prompt, seed, frame rate, rounds, guidance, sampler -> video (needs cogframe[web])."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--host``, ``--port``, ``--recipe``, ``--out`` and overrides."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for a LAN)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--recipe", default="tiny/sample", help="the sampling recipe (default tiny/sample)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where generated files go (default: a new temporary folder)")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*",
                        help="overrides of the recipe applied to every request, e.g. threads=2")


def run(args: argparse.Namespace) -> int:
    """Builds the page and serves it until interrupted."""
    # Before Gradio is imported: no usage reports to the network.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from cogframe.cli.web_app import build_app
    from cogframe.errors import ConfigError

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}.")
    app = build_app(args.recipe, tuple(args.overrides), out_root=args.out)
    import gradio as gr

    # System fonts: the default theme would ask Google Fonts for its typefaces.
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    print(f"cogframe web: serving recipe {args.recipe} on http://{args.host}:{args.port} (Ctrl-C stops)",
          flush=True)
    app.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=True,
        allowed_paths=[str(app.cogframe_out_root)], theme=theme, ssr_mode=False, quiet=True)
    return 0

"""`physalign reason`: add a reasoner's attributes, enhanced prompt, expected phenomena and one-axis
variants to every line of a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def reason_command(
    manifest: Path = typer.Option(..., help="Input manifest (JSONL; each line has at least 'prompt')."),
    out: Path = typer.Option(..., help="Output manifest. Re-running continues it where it stopped."),
    backend: str = typer.Option("world", help="world (the scene grammar, exact) | openai (a chat endpoint) | local (a model folder)."),
    base_url: Optional[str] = typer.Option(None, help="openai: the endpoint's base URL, e.g. http://localhost:8000/v1."),
    model: Optional[str] = typer.Option(None, help="openai: the model name the endpoint serves."),
    path: Optional[Path] = typer.Option(None, help="local: a folder with a causal LM (safetensors) and its tokenizer."),
    cache: Optional[Path] = typer.Option(None, help="openai/local: a folder caching valid answers."),
    api_key_env: Optional[str] = typer.Option(None, help="openai: the environment variable holding the API key."),
    response_format: str = typer.Option("none", help="openai: none | json_object | json_schema."),
    timeout: float = typer.Option(60.0, help="openai: seconds to wait for the endpoint."),
    attempts: Optional[int] = typer.Option(None, help="openai/local: attempts per request (default 3 / 1)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Reason about every prompt of MANIFEST with a backend and write the answers to OUT.

    A prompt the backend cannot answer gets a 'reason_error' field on its line and is counted, not fatal.
    """
    from physalign.reasoning import build_reasoner
    from physalign.reasoning.annotate import annotate_manifest

    options = _options(backend, base_url, model, path, cache, api_key_env, response_format, timeout, attempts)
    try:
        reasoner = build_reasoner(backend, **options)
        summary = annotate_manifest(manifest, out, reasoner, progress=progress)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for message in summary.messages[:5]:
        typer.echo(f"  reason_error {message}", err=True)
    typer.echo(f"wrote {summary.written} lines to {out} ({summary.resumed} already there, {summary.rows} in all); "
               f"{summary.errors} lines with reason_error")


def _options(backend, base_url, model, path, cache, api_key_env, response_format, timeout, attempts) -> dict:
    """The backend's constructor arguments from the flags; a missing required flag exits naming it."""
    required = {"openai": {"--base-url": base_url, "--model": model}, "local": {"--path": path}}.get(backend, {})
    missing = [flag for flag, value in required.items() if value is None]
    if missing:
        typer.echo(f"error: --backend {backend} needs {' and '.join(missing)}", err=True)
        raise typer.Exit(2)
    common = {"cache": None if cache is None else str(cache)}
    if attempts is not None:
        common["attempts"] = attempts
    if backend == "openai":
        return {"base_url": base_url, "model": model, "api_key_env": api_key_env, "response_format": response_format,
                "timeout": timeout, **common}
    if backend == "local":
        return {"path": str(path), **common}
    return {}

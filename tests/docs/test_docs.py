"""The documentation site builds with ``mkdocs build --strict``, and its examples run.

The API reference is generated from the docstrings by mkdocstrings, so a broken cross-reference,
a docstring griffe cannot parse or a page left out of the nav fails here (and in ``make docs``).
As in README.md, every ``python`` block in docs/ runs, and a block that prints is followed by an
HTML comment, ``<!-- output: ... -->``, holding its exact output.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import fluxgate_stream

from ..support.processes import run_python

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
EXAMPLE = re.compile(r"```python\n(.*?)```\n(?:<!-- output:\n(.*?)-->\n)?", flags=re.S)
EXAMPLES = [
    pytest.param(code, output, id=f"{page.name}:{n}")
    for page in PAGES
    for n, (code, output) in enumerate(EXAMPLE.findall(page.read_text(encoding="utf-8")), 1)
]
SOURCE_URL = re.search(  # the project's URL, as pyproject.toml states it (no tomllib on 3.10)
    r'^Source = "(.+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), flags=re.M
)[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = run_python(
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        site_dir,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert "WARNING" not in result.stderr, result.stderr
    return site_dir


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def anchors(html: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', html))


@pytest.mark.slow
def test_every_public_name_has_an_entry_in_the_api_reference(site):
    ids = anchors(page(site, "api"))
    public = set(fluxgate_stream.__all__) - {"__version__"}
    assert {f"fluxgate_stream.{name}" for name in public} <= ids


@pytest.mark.slow
@pytest.mark.parametrize(
    "member",
    [
        "PrometheusListener.__call__",
        "PrometheusListener.close",
        "PrometheusListener.name",
        "SignalPipeline.run",
        "SignalPipeline.flush",
        "SignalPipeline.running",
        "SignalPipeline.stats",
        "StreamingListener.close",
        "SignalSink.write",
        "AnyioCircuitBreaker.call",
        "AnyioCircuitBreaker.force_open",
        "HealthCollector.watch",
        "HealthWatch.close",
    ],
)
def test_the_api_reference_documents_the_members(site, member):
    assert f"fluxgate_stream.{member}" in anchors(page(site, "api"))


@pytest.mark.slow
def test_the_api_reference_renders_the_google_sections(site):
    html = page(site, "api")
    # Args: and Raises: became tables, not paragraphs that start with "Args:".
    assert "Args:" not in html
    assert '<span class="doc-section-title">Raises:</span>' in html
    assert "<code>max_buffer_size</code> is less than 1, or <code>batch_window</code>" in html


@pytest.mark.slow
def test_the_asgi_and_health_pages_render_their_modules(site):
    assert {"fluxgate_stream.asgi.lifespan", "fluxgate_stream.asgi.running"} <= anchors(
        page(site, "asgi")
    )
    health = page(site, "health")
    assert "fluxgate_stream.health.SupportsInfo" in anchors(health)
    assert "circuit_breaker_last_transition_timestamp_seconds" in health  # the module docstring


@pytest.mark.slow
def test_the_time_in_state_page_renders_its_rules_from_the_module(site):
    html = page(site, "time_in_state")
    assert "circuit_breaker_state_seconds_total" in html
    assert "A late signal changes no interval." in html
    assert "The clock may go backwards" in html


@pytest.mark.slow
def test_the_guarantees_page_renders_the_concurrency_model_from_the_source(site):
    html = page(site, "guarantees")
    assert "fluxgate_stream.pipeline--concurrency-model" in anchors(html)
    assert "fluxgate_stream.anyio_breaker--relationship-to-upstream" in anchors(html)
    assert "sticky" in html


@pytest.mark.slow
def test_every_alerts_runbook_url_names_a_section_of_the_built_runbook(site):
    """deploy/prometheus/alerts.yml links each alert to docs/runbook.md#<anchor>: the site has
    that anchor (GitHub renders the same one for these plain headings)."""
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    urls = re.findall(r"^ +runbook_url: (\S+)$", alerts, flags=re.M)
    assert len(urls) == alerts.count("- alert: ") == 7
    prefix = f"{SOURCE_URL}/blob/main/docs/runbook.md#"
    assert all(url.startswith(prefix) for url in urls), urls
    missing = {url.removeprefix(prefix) for url in urls} - anchors(page(site, "runbook"))
    assert missing == set()


def github_slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_the_readme_point_at_its_headings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = {github_slug(h) for h in re.findall(r"^#+ (.+)$", readme, flags=re.M)} | {"readme"}
    links = [
        (p.name, anchor)
        for p in PAGES
        for anchor in re.findall(
            rf"{re.escape(SOURCE_URL)}#([\w-]+)", p.read_text(encoding="utf-8")
        )
    ]
    assert len(links) >= 5  # the site sends readers to the README for install and quick starts
    assert [(name, a) for name, a in links if a not in headings] == []


def test_the_site_points_at_the_projects_repository():
    assert f"repo_url: {SOURCE_URL}\n" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_code_blocks_in_the_docs_are_python_or_plain_text():
    fences = [
        lang
        for p in PAGES
        for lang in re.findall(r"^```(\S*)$", p.read_text(encoding="utf-8"), re.M)
    ]
    # Closing fences are bare; an opening fence in another Python dialect would escape the tests.
    assert {lang for lang in fences if lang} <= {"python", "text"}
    assert len(EXAMPLES) >= 9  # the README's long-form examples moved here: none dropped


def run(code: str) -> str:
    return run_python("-c", code).stdout


@pytest.mark.parametrize(("code", "output"), EXAMPLES)
def test_docs_example_prints_what_the_docs_say(code, output):
    assert ("print(" in code) == bool(output), "a block that prints must state its output"
    assert run(code) == output


@pytest.mark.parametrize(
    ("code", "output"), [e for e in EXAMPLES if "anyio.run(main)" in e.values[0]]
)
def test_docs_task_group_examples_run_on_trio_too(code, output):
    assert run(code.replace("anyio.run(main)", 'anyio.run(main, backend="trio")')) == output

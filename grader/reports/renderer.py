"""A student's executed notebook as a web page: nbconvert in a child process with time and memory
limits (a notebook is student data that nbconvert may take minutes or gigabytes over), forked by
the warm renderer (grader.reports.renderserver) where one runs, with student HTML cleaned and the
grading machine's folders scrubbed from outputs."""

from __future__ import annotations

import functools
import os
import re
import resource
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from grader.forkserver import Client, ServerGone
from grader.isolation.launch import module_command
from grader.model import paths


@dataclass(frozen=True)
class RenderLimits:
    """What rendering one student's pages may take."""

    seconds: float = 60.0  # wall clock, and CPU time, of the rendering child
    memory_mb: int = 2048  # address space of the rendering child


DEFAULT_LIMITS = RenderLimits()


# Host paths -------------------------------------------------------------------------------------

@functools.cache
def _host_prefixes() -> dict[str, str]:
    """Folders of the grading machine and what students see instead."""
    prefixes: dict[str, str] = {}
    sites = [*site.getsitepackages(), site.getusersitepackages(),
             *(sysconfig.get_paths().get(k, "") for k in ("purelib", "platlib"))]
    for path in sites:
        prefixes[path] = "<site-packages>"
    for path in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        prefixes[path] = "<python>"
    prefixes[str(paths.PACKAGE.parent)] = "<grader>"
    prefixes[str(Path.home())] = "~"
    for path, label in list(prefixes.items()):
        prefixes.setdefault(os.path.realpath(path), label)
    return {p.rstrip("/"): label for p, label in prefixes.items() if p and p.rstrip("/")}


@functools.cache
def _host_pattern() -> re.Pattern[str]:
    runs = {re.escape(d) for d in ("/tmp", tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir()))}
    run_dirs = rf"(?:{'|'.join(sorted(runs))})/grader-[^/\s'\"]*"
    fixed = "|".join(re.escape(p) for p in sorted(_host_prefixes(), key=len, reverse=True))
    return re.compile(rf"(?P<run>{run_dirs})|(?P<fixed>{fixed})(?=[/\\\s'\":,)\]]|$)")


def scrub_paths(text: str) -> str:
    """TEXT with the grading machine's folders (venv, site-packages, run dirs, home) named generically."""
    prefixes = _host_prefixes()

    def name(match: re.Match[str]) -> str:
        return "<run>" if match.group("run") else prefixes[match.group("fixed")]

    return _host_pattern().sub(name, text)


def _scrub_outputs(value: Any) -> Any:
    """Every string in an output (tracebacks, stderr, text) with host paths scrubbed."""
    if isinstance(value, str):
        return scrub_paths(value)
    if isinstance(value, list):
        return [_scrub_outputs(v) for v in value]
    if isinstance(value, dict):
        return type(value)({k: _scrub_outputs(v) for k, v in value.items()})
    return value


# The notebook's page -------------------------------------------------------------------------

def render_notebook_page(notebook_json: str, page: Path, limits: RenderLimits,
                          renderer: Renderer | None = None) -> str:
    """Render the notebook to PAGE in a limited child process (forked by RENDERER's warm server
    where it has one); what went wrong, or ''."""
    if renderer is not None:
        answer = renderer.render(notebook_json, page, limits)
        if answer is not None:
            return _render_problem(answer, limits)
    command = [sys.executable, "-c", "from grader.reports.renderer import render_child; render_child()",
               str(page), str(limits.memory_mb), str(max(1, int(limits.seconds)))]
    try:
        run = subprocess.run(command, input=notebook_json.encode("utf-8", "surrogatepass"),
                             capture_output=True, timeout=limits.seconds, check=False)
    except subprocess.TimeoutExpired:
        return f"rendering took longer than {limits.seconds:g} s"
    return _render_problem({"returncode": run.returncode,
                            "stderr": run.stderr.decode("utf-8", "replace")}, limits)


def _render_problem(answer: dict[str, Any], limits: RenderLimits) -> str:
    """What went wrong in a rendering child, from its exit status and stderr; '' if nothing."""
    returncode, stderr = int(answer["returncode"]), str(answer.get("stderr", "")).strip()
    if answer.get("timed_out"):
        return f"rendering took longer than {limits.seconds:g} s"
    if returncode == 0:
        return ""
    if returncode == -signal.SIGXCPU:
        return f"rendering used more than {limits.seconds:g} s of CPU"
    if "MemoryError" in stderr or returncode == -signal.SIGKILL:
        return f"rendering needed more than {limits.memory_mb} MB of memory"
    last = stderr.splitlines()[-1] if stderr else f"exit status {returncode}"
    return f"the renderer failed: {last[:500]}"


class Renderer:
    """The warm renderer (grader.reports.renderserver) of one thread: nbconvert imported once, each
    page still rendered in a limited child of its own. Where the server is gone or stops
    answering, `render` says so (None) and the page is rendered by a cold child; the next page
    starts a new server. Use it from one thread at a time; close it when done."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
        self._ready = False

    def start(self) -> None:
        """Start the server, which warms up in the background; no-op if it runs."""
        if self.process is not None and self.process.poll() is None:
            return
        self.close()  # one that died
        client = Client("the renderer")
        try:
            self.process = subprocess.Popen(
                module_command("grader.reports.renderserver"), stdin=client.stdin,
                stdout=client.stdout, stderr=subprocess.DEVNULL)
        except BaseException:
            client.close()
            raise
        client.started()
        self.client, self._ready = client, False

    def render(self, notebook_json: str, page: Path, limits: RenderLimits) -> dict[str, Any] | None:
        """The server's answer for rendering NOTEBOOK_JSON to PAGE within LIMITS, or None where
        the server could not answer (it is then stopped)."""
        self.start()
        assert self.client is not None
        try:
            if not self._ready:
                self.client.ready(_WARM_UP_SECONDS)
                self._ready = True
            request = {"page": str(page), "notebook": notebook_json,
                       "memory_mb": limits.memory_mb, "seconds": max(1, int(limits.seconds))}
            self.client.send(request, timeout=limits.seconds + 10)
            answer = self.client.receive(limits.seconds + 10)
        except (OSError, ValueError, ServerGone):
            self.close()
            return None
        if "returncode" not in answer:  # it could not take the request
            self.close()
            return None
        return answer

    def close(self) -> None:
        """Stop the server."""
        process, self.process = self.process, None
        client, self.client = self.client, None
        if client is not None:
            client.close_requests()
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if client is not None:
            client.close()


_WARM_UP_SECONDS = 120.0


def limit_renderer(memory_mb: int, seconds: int) -> None:
    """Hold this rendering process to MEMORY_MB of address space and SECONDS of CPU."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def render_child() -> None:
    """In the rendering child: limit this process, then render the notebook on stdin to a page."""
    page, memory_mb, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    limit_renderer(memory_mb, seconds)
    notebook_json = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
    write_whole(page, notebook_html(notebook_json))


def write_whole(path: Path, text: str) -> None:
    """Write TEXT to PATH through a temporary file, so that PATH is never half written."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8", errors="replace")
    partial.replace(path)


# Markdown renders as HTML; whatever the student wrote is cleaned to these tags and attributes.
SAFE_TAGS = frozenset({
    "a", "abbr", "acronym", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl",
    "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre",
    "s", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "u", "ul",
})
SAFE_ATTRIBUTES = {
    "*": ["class", "id", "title"], "a": ["href"], "img": ["src", "alt", "width", "height"],
    "td": ["align", "colspan", "rowspan"], "th": ["align", "colspan", "rowspan"],
}


def _clean_html(element: str | bytes) -> str:
    """Student HTML reduced to SAFE_TAGS: no script, style, event handler or javascript: URL."""
    import bleach

    text = element.decode() if isinstance(element, bytes) else str(element)
    return bleach.clean(text, tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES,
                        protocols={"http", "https", "mailto"})


def notebook_html(notebook_json: str) -> str:
    """The executed notebook through nbconvert: markdown rendered, student HTML cleaned, host
    paths scrubbed from outputs."""
    notebook = nbformat.reads(notebook_json, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = _scrub_outputs(cell.get("outputs", []))
    body, _ = _exporter().from_notebook_node(notebook)
    return body


@functools.cache
def _exporter() -> Any:
    """The HTML exporter, made once per process: its Jinja templates are compiled on its first
    page (a tenth of a second), so the warm renderer's children, forked after its warm-up page,
    each start from compiled templates. An exporter keeps nothing of a page for the next."""
    from nbconvert import HTMLExporter

    # nbconvert's own clean_html escapes <h1> and <p>, so markdown showed as literal tags; ours
    # keeps what markdown makes and still drops scripts (nbconvert issue #2016).
    return HTMLExporter(template_name="classic", sanitize_html=True,
                        filters={"clean_html": _clean_html})

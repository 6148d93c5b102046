"""Fetch the reference kernels from Debian's package archive (``cowcore kernel fetch``).

The conformance suite compares the simulator with three real kernels: the 6.1 kernel of Debian
*bookworm* (PMD-size THP only, before multi-size THP), one from before the COW reuse of
PTE-mapped large folios (the 6.12 kernel of *trixie*) and one after it (the newest 7.x kernel
of *unstable* or *trixie-backports*). All are plain Debian kernel image packages. The probe
needs the vmlinuz and one module with its dependencies: zram, the guest's swap device (``P
pageout``). The 6.1 and 6.12 image packages hold the modules too; the split-packaged 7.x images
(6.19+) keep them in ``linux-modules-REL``, which is fetched and unpacked beside the vmlinuz.

apt runs with a private configuration whose sources list, state and cache all live under
``DIR/apt`` so that the machine's own apt configuration is never touched. The archive address
is the one already configured on the machine (``/etc/apt/sources.list.d/debian.sources`` or
``/etc/apt/sources.list``), because CI machines may only reach a local mirror. Nothing is
pinned: the newest image of each line that the archive has is chosen at fetch time, and the
result is written to ``DIR/kernels.json`` so that later fetches are no-ops.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Set as AbstractSet
from pathlib import Path

__all__ = [
    "DEBIAN_LINES",
    "FetchError",
    "Kernel",
    "archive_uri",
    "fetch_kernels",
    "fetchable_lines",
    "load_kernels",
    "modules_dir",
]

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MANIFEST = "kernels.json"
# The suites of the private sources list: bookworm for the 6.1 line, trixie for the 6.12
# line; unstable and trixie-backports for the newest 7.x line. ``--also X.Y`` looks in all.
SUITES = ("bookworm", "trixie", "trixie-backports", "unstable")
# PMD-size THP only, no per-size controls: the 6.1 kernel of bookworm (bookworm's own suite,
# not its backports, which carry newer lines).
OLDEST_LINE_SUITES = frozenset({"bookworm"})
# Before the reuse change: the 6.12 kernel of trixie.
OLD_LINE_SUITES = frozenset({"trixie"})
# After it: the newest 7.x of unstable (also named sid) or trixie-backports.
NEW_LINE_SUITES = frozenset({"unstable", "sid", "trixie-backports"})

# The lines fetched by name (besides the newest 7.x): a `--kernel 6.1` or `--kernel 6.12`
# that is missing is fetched by a plain `cowcore kernel fetch`.
DEBIAN_LINES = ("6.1", "6.12")

# The package names of a Debian amd64 kernel image: linux-image-6.12.117+deb13-amd64 (the
# signed image) or the same with "-unsigned" (older, bookworm's 6.1: linux-image-6.1.0-18-amd64,
# whose name keeps 6.1.0 for every 6.1.y upload; the version field has the real one). The
# -rt/-cloud flavours and the -dbg packages are not wanted.
_IMAGE_TAIL = r"(?:\+deb\d+)?(?:-\d+)?-amd64(?:-unsigned)?$"
_IMAGE_RE = re.compile(r"^linux-image-(\d+)\.(\d+)\.(\d+)" + _IMAGE_TAIL)


def _line_re(major: str, minor: str) -> re.Pattern[str]:
    """Image packages of one kernel line; ``minor`` may be a pattern (``\\d+``)."""
    return re.compile(rf"^linux-image-{major}\.{minor}\.\d+" + _IMAGE_TAIL)


class FetchError(Exception):
    """A kernel could not be fetched; the message says why (shown to the user, no traceback)."""


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One fetched kernel: its line (``6.12``), Debian package and version, and vmlinuz path."""

    series: str
    package: str
    version: str
    vmlinuz: Path

    def to_json(self, directory: Path) -> dict[str, str]:
        """The manifest form of this kernel; the path is relative to the kernels directory so
        that the directory can move (a CI cache restored elsewhere)."""
        try:
            vmlinuz = str(self.vmlinuz.relative_to(directory))
        except ValueError:
            vmlinuz = str(self.vmlinuz)
        return {
            "series": self.series,
            "package": self.package,
            "version": self.version,
            "vmlinuz": vmlinuz,
        }


def archive_uri(
    sources_dir: Path = Path("/etc/apt/sources.list.d"),
    sources_list: Path = Path("/etc/apt/sources.list"),
) -> tuple[str, str]:
    """Return ``(uri, signed_by)`` of the Debian archive already configured on this machine.

    The main archive is the configured URI that is not a security archive. ``signed_by`` is the
    keyring named by that entry, or Debian's archive keyring when none is named.
    """
    candidates: list[tuple[str, str]] = []
    deb822 = sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []
    for path in deb822:
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                candidates.append((uri, fields.get("signed-by", DEFAULT_KEYRING)))
    lists = [sources_list] if sources_list.is_file() else []
    if sources_dir.is_dir():
        lists += sorted(sources_dir.glob("*.list"))
    for path in lists:
        for line in path.read_text(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            signed_by = DEFAULT_KEYRING
            if words and words[0].startswith("["):
                opts: list[str] = []
                while words:
                    opts.append(words.pop(0))
                    if opts[-1].endswith("]"):
                        break
                for opt in " ".join(opts).strip("[]").split():
                    if opt.startswith("signed-by="):
                        signed_by = opt.split("=", 1)[1]
            if words:
                candidates.append((words[0], signed_by))
    for uri, signed_by in candidates:
        if "security" not in uri and "/debian" in uri:
            return uri.rstrip("/"), signed_by
    for uri, signed_by in candidates:
        if "security" not in uri:
            return uri.rstrip("/"), signed_by
    raise FetchError(
        "no Debian archive configured in /etc/apt/sources.list.d/*.sources or "
        "/etc/apt/sources.list; cannot fetch kernels"
    )


class _Apt:
    """apt-get / apt-cache with a private configuration rooted at ``root``."""

    def __init__(self, root: Path, uri: str, signed_by: str) -> None:
        self.root = root
        for sub in (
            "state/lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
        status = root / "status"
        if not status.exists():
            status.write_text("")
        (root / "sources.list").write_text(
            "".join(f"deb [signed-by={signed_by}] {uri} {s} main\n" for s in SUITES)
        )
        self.options = [
            f"-oDir::Etc::SourceList={root / 'sources.list'}",
            f"-oDir::Etc::SourceParts={root / 'sources.list.d'}",
            f"-oDir::Etc::Preferences={root / 'preferences'}",
            f"-oDir::Etc::PreferencesParts={root / 'preferences.d'}",
            f"-oDir::State={root / 'state'}",
            f"-oDir::State::status={status}",
            f"-oDir::Cache={root / 'cache'}",
            "-oAPT::Architecture=amd64",
            "-oAPT::Architectures=amd64",
            "-oAcquire::Languages=none",
            "-oAPT::Default-Release=",
        ]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        """Run ``tool`` (apt-get or apt-cache) with the private options; return stdout."""
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} not found: cowcore kernel fetch needs apt (Debian/Ubuntu)")
        cmd = [tool, *self.options, *args]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise FetchError(
                f"{' '.join([tool, *args])} failed (exit {proc.returncode}):\n"
                + proc.stderr.strip()[-2000:]
            )
        return proc.stdout


def _compare_versions(a: str, b: str) -> int:
    """Debian version comparison through ``dpkg --compare-versions`` (-1, 0 or 1)."""
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode
    return -1 if lt == 0 else 1


def _madison(apt: _Apt, packages: list[str]) -> list[tuple[str, str, str]]:
    """``(package, version, suite)`` rows of ``packages`` in the private archive lists (one
    apt-cache call: each call re-reads the package lists, which takes seconds)."""
    rows: list[tuple[str, str, str]] = []
    if not packages:
        return rows
    for line in apt.run("apt-cache", "madison", *packages).splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and parts[0] in packages:
            where = parts[2].split()
            suite = where[1].split("/")[0] if len(where) > 1 else ""
            rows.append((parts[0], parts[1], suite))
    return rows


def _choose(
    apt: _Apt, names: list[str], want: re.Pattern[str], suites: AbstractSet[str]
) -> tuple[str, str, str]:
    """Newest ``(package, version, suite)`` among image packages matching ``want``."""
    best: tuple[str, str, str] | None = None
    for name, version, suite in _madison(apt, [n for n in names if want.match(n)]):
        if suite not in suites:
            continue
        # Prefer the newer version; at equal versions prefer the signed image.
        if (
            best is None
            or _compare_versions(version, best[1]) > 0
            or (
                version == best[1]
                and best[0].endswith("-unsigned")
                and not name.endswith("-unsigned")
            )
        ):
            best = (name, version, suite)
    if best is None:
        raise FetchError(f"no kernel image matching {want.pattern} in suites {sorted(suites)}")
    return best


def _extract_binary(apt: _Apt, image_deb: Path, debs: Path, dest: Path) -> None:
    """Download and unpack the ``linux-binary-*`` package that ``image_deb`` depends on."""
    proc = subprocess.run(
        ["dpkg-deb", "-f", str(image_deb), "Depends"], capture_output=True, text=True, check=False
    )
    m = re.search(r"(linux-binary-\S+) \(= ([^)]+)\)", proc.stdout)
    if m is None:
        raise FetchError(f"{image_deb.name} holds no vmlinuz and depends on no linux-binary-*")
    _unpack(_download(apt, m.group(1), m.group(2), debs), dest)


def _download(apt: _Apt, package: str, version: str, debs: Path) -> Path:
    """``apt-get download package=version`` into ``debs`` (an older copy removed first);
    returns the ``.deb``."""
    for old in debs.glob(f"{package}_*.deb"):
        old.unlink()
    apt.run("apt-get", "download", "-q", f"{package}={version}", cwd=debs)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise FetchError(f"apt-get download {package}={version} produced no .deb")
    return found[-1]


def _unpack(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x deb dest``."""
    proc = subprocess.run(
        ["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb} failed: {proc.stderr.strip()}")


def _find_vmlinuz(dest: Path, release: str) -> Path | None:
    """The vmlinuz unpacked under ``dest``: ``boot/vmlinuz-REL`` or (6.19+ packaging)
    ``usr/lib/modules/REL/vmlinuz``; None when there is none."""
    for cand in (
        dest / "boot" / f"vmlinuz-{release}",
        dest / "usr" / "lib" / "modules" / release / "vmlinuz",
    ):
        if cand.is_file():
            return cand
    return None


def _kernel_release(package: str) -> str:
    """``6.12.117+deb13-amd64`` from ``linux-image-6.12.117+deb13-amd64[-unsigned]``."""
    release = package.removeprefix("linux-image-")
    return release.removesuffix("-unsigned")


def modules_dir(vmlinuz: Path) -> Path | None:
    """The unpacked ``lib/modules/REL`` directory that belongs to ``vmlinuz`` (either layout:
    ``DEST/boot/vmlinuz-REL`` or ``DEST/usr/lib/modules/REL/vmlinuz``), when it holds modules
    (its ``kernel/`` subdirectory); else None."""
    if vmlinuz.name.startswith("vmlinuz-"):
        dest, release = vmlinuz.parent.parent, vmlinuz.name.removeprefix("vmlinuz-")
    else:
        dest, release = vmlinuz.parents[3], vmlinuz.parent.name
    for cand in (dest / "lib" / "modules" / release, dest / "usr" / "lib" / "modules" / release):
        if (cand / "kernel").is_dir():
            return cand
    return None


def _has_zram(vmlinuz: Path) -> bool:
    """Whether the zram module (the probe's swap device) was unpacked with ``vmlinuz``."""
    mods = modules_dir(vmlinuz)
    return mods is not None and any((mods / "kernel/drivers/block/zram").glob("zram.ko*"))


def _extract_modules(apt: _Apt, package: str, version: str, debs: Path, dest: Path) -> None:
    """Download and unpack ``linux-modules-REL`` (the modules of a split-packaged image)."""
    modules = "linux-modules-" + _kernel_release(package)
    _unpack(_download(apt, modules, version, debs), dest)


def load_kernels(directory: Path) -> list[Kernel]:
    """The kernels recorded in ``directory/kernels.json`` whose vmlinuz exists (else [])."""
    directory = directory.resolve()
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return []
    try:
        rows = json.loads(manifest.read_text())
        kernels = [
            Kernel(r["series"], r["package"], r["version"], directory / r["vmlinuz"]) for r in rows
        ]
    except (ValueError, KeyError, TypeError):
        return []
    return [k for k in kernels if k.vmlinuz.is_file()]


def fetchable_lines() -> str:
    """What ``cowcore kernel fetch`` can get, in words (for error messages)."""
    return (
        f"6.1 from Debian {' or '.join(sorted(OLDEST_LINE_SUITES))}, "
        f"6.12 from {' or '.join(sorted(OLD_LINE_SUITES))} and the newest 7.x from "
        f"{' or '.join(s for s in SUITES if s in NEW_LINE_SUITES)}; "
        f"`--also X.Y` adds the newest X.Y that {', '.join(SUITES)} carry (if any)"
    )


def _have(kernels: list[Kernel], also: list[str]) -> bool:
    """Whether ``kernels`` covers the 6.1 and 6.12 lines, a 7.x line and every series in
    ``also``."""
    series = {k.series for k in kernels}
    return (
        "6.1" in series
        and "6.12" in series
        and any(s.startswith("7.") for s in series)
        and all(a in series for a in also)
    )


def fetch_kernels(
    directory: Path, refresh: bool = False, log: bool = True, also: list[str] | None = None
) -> list[Kernel]:
    """Download and unpack the 6.1, 6.12 and newest 7.x Debian kernels into ``directory``.

    ``also`` names extra lines (``7.2``) to fetch as well, the newest image of that
    major.minor in any of the private suites (used to check recordings made on an older 7.x).
    Idempotent: when ``directory/kernels.json`` already names existing vmlinuz files for every
    wanted line, nothing is downloaded (unless ``refresh``). Returns the kernels, oldest first.
    """
    also = list(also or [])
    for a in also:
        if not re.fullmatch(r"\d+\.\d+", a):
            raise FetchError(f"--also wants a kernel line like 7.2, not {a!r}")
    directory = directory.resolve()
    existing = load_kernels(directory)
    complete = all(_has_zram(k.vmlinuz) for k in existing)
    if _have(existing, also) and complete and not refresh:
        return existing
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "dpkg"):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} not found: cowcore kernel fetch needs apt and dpkg")
    uri, signed_by = archive_uri()
    apt = _Apt(directory / "apt", uri, signed_by)
    if log:
        print(
            f"cowcore kernel fetch: apt-get update from {uri} (private lists in {apt.root})",
            flush=True,
        )
    apt.run("apt-get", "update", "-q")
    names = sorted(
        n for n in apt.run("apt-cache", "pkgnames", "linux-image-").split() if _IMAGE_RE.match(n)
    )
    all_suites = OLDEST_LINE_SUITES | OLD_LINE_SUITES | NEW_LINE_SUITES
    lines = [
        (_line_re("6", "1"), OLDEST_LINE_SUITES),
        (_line_re("6", "12"), OLD_LINE_SUITES),
        (_line_re("7", r"\d+"), NEW_LINE_SUITES),
    ]
    for a in also:
        major, minor = a.split(".")
        lines.append((_line_re(major, minor), all_suites))
    kernels: list[Kernel] = []
    for want, suites in lines:
        package, version, suite = _choose(apt, names, want, suites)
        release = _kernel_release(package)
        m = _IMAGE_RE.match(package)
        assert m is not None
        series = f"{m.group(1)}.{m.group(2)}"
        dest = directory / series
        vmlinuz = _find_vmlinuz(dest, release)
        if vmlinuz is None:
            if log:
                print(
                    f"cowcore kernel fetch: downloading {package} {version} ({suite})", flush=True
                )
            debs = directory / "debs"
            debs.mkdir(exist_ok=True)
            image_deb = _download(apt, package, version, debs)
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            _unpack(image_deb, dest)
            if _find_vmlinuz(dest, release) is None:
                # Newer Debian kernels (6.19+) split the image: linux-image-* is a small
                # package depending on linux-binary-* (the vmlinuz) and linux-modules-*.
                _extract_binary(apt, image_deb, debs, dest)
            vmlinuz = _find_vmlinuz(dest, release)
            if vmlinuz is None:
                raise FetchError(f"{package} (and its linux-binary) hold no vmlinuz")
        if not _has_zram(vmlinuz):
            # Split-packaged images (6.19+) keep the modules in linux-modules-REL; an older
            # fetch (before `pageout`) took only the vmlinuz.
            if log:
                print(f"cowcore kernel fetch: downloading the modules of {package}", flush=True)
            debs = directory / "debs"
            debs.mkdir(exist_ok=True)
            _extract_modules(apt, package, version, debs, dest)
            if not _has_zram(vmlinuz):
                raise FetchError(f"{package} and its modules package hold no zram module")
        for deb in (directory / "debs").glob("*.deb"):  # unpacked: keep a CI cache small
            deb.unlink()
        if all(k.series != series for k in kernels):
            kernels.append(Kernel(series, package, version, vmlinuz))
    # Lines fetched earlier with --also (7.2) stay in the manifest while their files exist.
    for k in existing:
        if all(k.series != n.series for n in kernels):
            if not _has_zram(k.vmlinuz):
                if log:
                    print(f"cowcore kernel fetch: downloading the modules of {k.package}")
                (directory / "debs").mkdir(exist_ok=True)
                _extract_modules(
                    apt, k.package, k.version, directory / "debs", directory / k.series
                )
                for deb in (directory / "debs").glob("*.deb"):
                    deb.unlink()
            kernels.append(k)
    kernels.sort(key=functools.cmp_to_key(lambda a, b: _compare_versions(a.version, b.version)))
    (directory / MANIFEST).write_text(
        json.dumps([k.to_json(directory) for k in kernels], indent=2) + "\n"
    )
    return kernels

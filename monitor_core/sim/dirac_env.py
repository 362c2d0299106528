"""A DIRAC environment for Ganga's Dirac backend, backed by the simulated DIRAC grid.

``write_dirac_env(directory, "127.0.0.1:PORT")`` writes, into ``directory``:

* ``dirac-env.json``: the environment Ganga runs DIRAC code in (``[DIRAC]DiracEnvJSON``):
  ``PATH`` with the proxy tools, this interpreter's ``bin``, ``/usr/bin`` and ``/bin``;
  ``DIRACOS``, a DIRAC-OS-shaped tree whose ``site-packages`` holds the stand-in ``DIRAC``
  package (Ganga's DIRAC executor process puts it on ``sys.path`` from there), the same
  directory in ``PYTHONPATH`` for Ganga's ``python -`` subprocesses, and the service's
  address in ``GANGA_MONITOR_DIRAC_SERVICE``;
* ``bin/dirac-proxy-info`` and ``bin/dirac-proxy-init``: proxy tools that print what
  Ganga's ``DiracProxy`` reads (``DIRAC group  : <group>``, ``timeleft     : HH:MM:SS``, the
  uploaded proxies' table);
* ``proxy:<group>``: a proxy file, found by Ganga when ``X509_USER_PROXY`` names
  ``directory/proxy``;
* ``ganga.ini``: the Ganga options below, as a config file.

The stand-in ``DIRAC`` package is on a path only inside that environment, so it never
shadows a real DIRAC installation. The returned :class:`DiracEnvironment` holds the Ganga
options (``-o[Section]key=value`` strings) and the environment variables for the session.

``python -m monitor_core.sim.dirac_env DIR --service HOST:PORT`` writes it for a running
service; ``--serve`` also starts a simulated grid and serves it until interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DIRAC_PACKAGE_ROOT", "DiracEnvironment", "main", "write_dirac_env"]

DIRAC_PACKAGE_ROOT: Final = Path(__file__).resolve().parent / "dirac_site"
"""The directory holding the stand-in ``DIRAC`` package (never on ``sys.path`` by itself)."""
SERVICE_VARIABLE: Final = "GANGA_MONITOR_DIRAC_SERVICE"
DEFAULT_GROUP: Final = "ganga_user"
_PROXY_HOURS: Final = 24

_PROXY_INFO = '''#!{python}
"""dirac-proxy-info for the simulated DIRAC grid: reads the proxy file dirac-proxy-init wrote."""
import json, os, sys, time
args = sys.argv[1:]
path = args[args.index("--file") + 1] if "--file" in args else os.environ.get("X509_USER_PROXY", "")
try:
    with open(path) as stream:
        proxy = json.load(stream)
except (OSError, ValueError):
    print("Proxy file not found or not readable: " + path, file=sys.stderr)
    sys.exit(1)
left = max(0, int(proxy["expires"] - time.time()))
print("subject      : /DC=org/DC=sim/CN=ganga-monitor/CN=proxy")
print("issuer       : /DC=org/DC=sim/CN=ganga-monitor")
print("identity     : /DC=org/DC=sim/CN=ganga-monitor")
print("timeleft     : %02d:%02d:%02d" % (left // 3600, left % 3600 // 60, left % 60))
print("DIRAC group  : " + proxy["group"])
print("path         : " + path)
print("username     : " + proxy.get("username", "sim_user"))
if "-m" in args:
    print("== Proxies uploaded ==")
    print(" UserDN                          | UserGroup | ExpirationTime")
    expiry = time.strftime("%Y/%m/%d %H:%M", time.localtime(time.time() + 365 * 86400))
    print(" /DC=org/DC=sim/CN=ganga-monitor | " + proxy["group"] + " | " + expiry)
'''

_PROXY_INIT = '''#!{python}
"""dirac-proxy-init for the simulated DIRAC grid: writes a proxy file naming the group."""
import json, os, sys, time
args = sys.argv[1:]
def value(flag, default):
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else default
path = value("--out", os.environ.get("X509_USER_PROXY", "/tmp/x509up_u%d" % os.getuid()))
group = value("--group", "{group}")
hours, _, minutes = value("--valid", "{hours}:00").partition(":")
seconds = int(hours) * 3600 + int(minutes or 0) * 60
with open(path, "w") as stream:
    json.dump({{"group": group, "expires": time.time() + seconds, "username": "sim_user"}}, stream)
os.chmod(path, 0o600)
print("Proxy generated: " + path)
'''


@dataclass(frozen=True, slots=True)
class DiracEnvironment:
    """A written DIRAC environment: what to give Ganga to use it."""

    directory: Path
    env_json: Path
    """Ganga's ``[DIRAC]DiracEnvJSON``."""
    options: tuple[str, ...]
    """Ganga command-line options, ``-o[Section]key=value``."""
    environment: dict[str, str]
    """Environment variables for the Ganga session (its proxy file)."""
    config_file: Path
    """The options as a Ganga config file (``ganga --config=...``)."""
    proxy: Path
    """The proxy file Ganga finds through ``environment``."""


def _python_dir() -> str:
    return str(Path(sys.executable).parent)


def _diracos(directory: Path) -> Path:
    """A DIRAC-OS-shaped tree whose ``site-packages`` holds the stand-in package."""
    root = directory / "diracos"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = root / "lib" / version / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    link = site / "DIRAC"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(DIRAC_PACKAGE_ROOT / "DIRAC", target_is_directory=True)
    return root


def _tool(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_dirac_env(directory: str | Path, service_address: str, *, group: str = DEFAULT_GROUP) -> DiracEnvironment:
    """Write a DIRAC environment for Ganga into ``directory``, talking to the service at ``service_address``.

    Args:
        directory: where to write it (created if missing).
        service_address: ``host:port`` of the simulated DIRAC service (``python -m monitor_core.sim.dirac_grid``).
        group: the DIRAC group of the proxy (``[defaults_DiracProxy]group``).

    Raises:
        ValueError: the address is not ``host:port``.
    """
    host, _, port = service_address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"the service address must be host:port, not {service_address!r}")
    root = Path(directory).resolve()
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    info = _tool(bin_dir / "dirac-proxy-info", _PROXY_INFO.format(python=python))
    init = _tool(bin_dir / "dirac-proxy-init", _PROXY_INIT.format(python=python, group=group, hours=_PROXY_HOURS))
    diracos = _diracos(root)
    environment = {
        "PATH": os.pathsep.join([str(bin_dir), _python_dir(), "/usr/bin", "/bin"]),
        "DIRACOS": str(diracos),
        "PYTHONPATH": str(DIRAC_PACKAGE_ROOT),
        SERVICE_VARIABLE: f"{host}:{port}",
        "DIRACSYSCONFIG": "",
        "LANG": "C.UTF-8",
    }
    env_json = root / "dirac-env.json"
    env_json.write_text(json.dumps(environment, indent=1))
    proxy_base = root / "proxy"
    proxy = Path(f"{proxy_base}:{group}")
    proxy.write_text(json.dumps({"group": group, "expires": time.time() + _PROXY_HOURS * 3600, "username": "sim_user"}))
    proxy.chmod(0o600)
    settings = [
        ("Configuration", "RUNTIME_PATH", "GangaDirac"),
        ("DIRAC", "DiracEnvJSON", str(env_json)),
        ("DIRAC", "proxyInfoCmd", str(info)),
        ("DIRAC", "proxyInitCmd", str(init)),
        ("DIRAC", "RequireDefaultSE", "False"),
        ("defaults_DiracProxy", "group", group),
    ]
    config_file = root / "ganga.ini"
    sections: dict[str, list[str]] = {}
    for section, key, value in settings:
        sections.setdefault(section, []).append(f"{key} = {value}")
    config_file.write_text("".join(f"[{name}]\n" + "\n".join(lines) + "\n\n" for name, lines in sections.items()))
    return DiracEnvironment(
        directory=root,
        env_json=env_json,
        options=tuple(f"-o[{section}]{key}={value}" for section, key, value in settings),
        environment={"X509_USER_PROXY": str(proxy_base)},
        config_file=config_file,
        proxy=proxy,
    )


def _print_usage(environment: DiracEnvironment, service: str) -> None:
    exports = " ".join(f"{key}={value}" for key, value in environment.environment.items())
    print(f"DIRAC environment for the simulated grid at {service} written to {environment.directory}")
    print(f"  {exports} ganga --config={environment.config_file}")
    print("or with these options:")
    for option in environment.options:
        print(f"  '{option}'")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: write the environment (and optionally serve a simulated grid)."""
    parser = argparse.ArgumentParser(
        prog="ganga-monitor-sim dirac-env",
        description="Write a DIRAC environment that lets Ganga's Dirac backend use the simulated DIRAC grid.",
    )
    parser.add_argument("directory", type=Path)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--service", metavar="HOST:PORT", help="a running simulated DIRAC service")
    target.add_argument("--serve", action="store_true", help="start a simulated grid here and serve until Ctrl-C")
    parser.add_argument("--group", default=DEFAULT_GROUP, help="the proxy's DIRAC group")
    parser.add_argument("--latency", type=float, default=0.3, help="median call latency of the served grid (s)")
    args = parser.parse_args(argv)
    if not args.serve:
        try:
            environment = write_dirac_env(args.directory, args.service, group=args.group)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _print_usage(environment, args.service)
        return 0
    from ._dirac_service import DiracSimConfig
    from .dirac_grid import DiracGridProcess

    grid = DiracGridProcess(args.directory / "grid", DiracSimConfig(latency_median=args.latency))
    try:
        address = grid.start()
        environment = write_dirac_env(args.directory, address, group=args.group)
        _print_usage(environment, address)
        print("serving; Ctrl-C stops the grid", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        grid.stop()


if __name__ == "__main__":
    sys.exit(main())

"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd (Debian `slurm-wlm`)
started in the foreground from a temporary folder, with a generated slurm.conf that needs no
systemd, no cgroups and no accounting database. Import `slurm_cluster` into a test module to use
it; it yields the environment (SLURM_CONF set) under which sbatch, scontrol and scancel talk to
this cluster only, and stops every daemon it started when the module is done, even on failure.

Jobs run as root (slurmd launches them as the submitting user), so the fixture skips unless the
tests run as root with slurmctld, slurmd and munged on PATH.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
STARTUP_SECONDS = 60  # slurmd registers with slurmctld a few seconds after both start
STOP_SECONDS = 15

SLURM_CONF = """\
ClusterName=effattn-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# no systemd or cgroups here: track job processes through /proc, bind no CPUs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to `scontrol show job` (there is no sacct without a database)
MinJobAge=3600
# the node is what this file says, whatever the machine reports
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tails(root: Path, lines: int = 15) -> str:
    """The last lines of every daemon log, for failure messages."""
    tails = []
    for log in sorted((root / "log").glob("*")):
        tails.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(tails)


class SlurmCluster:
    """munged + slurmctld + slurmd on 127.0.0.1, all state under `root`."""

    def __init__(self, root: Path, cpus: int, memory_mb: int) -> None:
        self.root = root
        self.processes: list[subprocess.Popen] = []
        # a Unix socket path must stay under ~108 bytes, so it does not live under a long tmp_path
        self.munge_dir = Path(tempfile.mkdtemp(prefix="munge-"))
        self.munge_dir.chmod(0o755)  # munged wants its socket folder reachable by every user
        for folder in ("state", "spool", "log"):
            (root / folder).mkdir()
        self.conf = root / "slurm.conf"
        self.conf.write_text(SLURM_CONF.format(root=root, ctld_port=free_port(), slurmd_port=free_port(),
                                               munge_socket=self.munge_dir / "socket", cpus=cpus,
                                               memory_mb=memory_mb))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for name in list(self.env):  # a surrounding Slurm job's settings would leak into sbatch
            if name.startswith(("SBATCH_", "SLURM_")) and name != "SLURM_CONF":
                del self.env[name]

    def start(self) -> None:
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        m = self.munge_dir
        # --force: munged refuses to run as root without it
        self._spawn("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={m}/socket",
                               f"--pid-file={m}/munged.pid", f"--seed-file={m}/munged.seed",
                               f"--log-file={self.root}/log/munged.log", "--num-threads=4"])
        self._wait_for(lambda: (m / "socket").exists(), "munged to create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait_for(self.node_is_idle, "the node to be idle in `sinfo`")

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.root / "log" / f"{name}.stdout", "wb") as output:
            # a session of its own, so a terminal's Ctrl-C reaches pytest, which then stops it
            self.processes.append(subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=self.env,
                                                   start_new_session=True))

    def _wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not ready():
            exited = [process.args[0] for process in self.processes if process.poll() is not None]
            if exited or time.monotonic() > deadline:
                problem = f"{', '.join(exited)} exited" if exited else f"no luck in {STARTUP_SECONDS} s"
                raise RuntimeError(f"waiting for {what}: {problem}\n{log_tails(self.root)}")
            time.sleep(0.2)

    def node_is_idle(self) -> bool:
        state = self.run(["sinfo", "--noheader", "--format=%T"], check=False).stdout.strip()
        return state == "idle"

    def run(self, argv: list[str], check: bool = True, **options) -> subprocess.CompletedProcess:
        options = {"env": self.env, **options}
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30, **options)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Reason, ...); an array job gives its
        tasks' records one after another, so take `jobs` for those."""
        return self.jobs(job_id)[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        shown = self.run(["scontrol", "--oneliner", "show", "job", job_id]).stdout
        return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in shown.splitlines()]

    def stop(self) -> None:
        """Cancel what is left (slurmd would leave running jobs behind), then stop the daemons
        in reverse order: SIGTERM, and SIGKILL if one does not exit in time."""
        if self.processes and all(process.poll() is None for process in self.processes):
            self.run(["scancel", "--full", f"--user={os.getuid()}"], check=False)
            deadline = time.monotonic() + STOP_SECONDS
            while self.run(["squeue", "--noheader"], check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(self.munge_dir, ignore_errors=True)


def missing_requirement() -> str | None:
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not on PATH: install Debian's slurm-wlm (apt-get install -y slurm-wlm)"
    if os.geteuid() != 0:
        return "a single-node Slurm needs root to start slurmd and launch jobs; run the slurm tests as root"
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    """A started single-node cluster (2 CPUs, 4 GB) whose `env` points sbatch & co. at it."""
    reason = missing_requirement()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=2, memory_mb=4000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

//! A one-node Slurm cluster on localhost for the tests: munged, slurmctld and slurmd with
//! their configuration, keys, state and logs in a temporary directory, on free ports.
//!
//! The daemons run under a small `sh` supervisor whose stdin is a pipe from this process.
//! The pipe closes when this process exits for any reason (a panic, SIGKILL, Ctrl-C), and
//! the supervisor then cancels the cluster's jobs (slurmd leaves running jobs behind when
//! it stops), stops the daemons and removes the directory. One shared cluster serves every
//! test of the process ([`shared`]); [`Cluster::start`] gives a private one a test may break.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use orch::exec::slurm::Client;

const INSTALL: &str = "run `scripts/install-test-servers.sh` (as root) to install Slurm and munge";

/// How long the cluster may take to come up (measured: about 2 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The supervisor: starts the daemons, waits for its stdin to close, cleans up.
const SUPERVISOR: &str = r#"
set -u
D=$1
export SLURM_CONF="$D/slurm.conf"
# Whether any of the PIDs is running (a zombie, not yet reaped, has ended).
alive() {
    for p; do
        grep -qs '^State:[[:space:]]*[^Z]' "/proc/$p/status" && return 0
    done
    return 1
}
# SIGTERM, up to 10 s to exit, then SIGKILL.
stop() {
    kill -TERM "$@" 2>/dev/null
    i=0
    while [ "$i" -lt 100 ] && alive "$@"; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$@" 2>/dev/null
    wait "$@" 2>/dev/null
}
cleanup() {
    trap '' INT TERM HUP
    # slurmd leaves running jobs behind when it stops: cancel them first and give them
    # up to 10 s to go, while the controller is there to do it.
    if [ -e "$D/slurmctld.pid" ]; then
        "$SCANCEL" --quiet --user="$(id -un)" 2>/dev/null
        i=0
        while [ "$i" -lt 100 ] && [ -n "$("$SQUEUE" --noheader --format=%i 2>/dev/null)" ]; do
            sleep 0.1
            i=$((i + 1))
        done
    fi
    stop "$slurmd" "$slurmctld"
    stop "$munged"
    rm -rf "$D"
    exit 0
}
trap cleanup INT TERM HUP
"$MUNGED" -F --socket="$D/munge/munge.socket" --key-file="$D/munge.key" \
    --pid-file="$D/munged.pid" --seed-file="$D/munge.seed" --log-file="$D/munged.log" \
    >"$D/munged.out" 2>&1 &
munged=$!
i=0
while [ ! -S "$D/munge/munge.socket" ] && [ "$i" -lt 500 ]; do sleep 0.02; i=$((i + 1)); done
"$SLURMCTLD" -D -i -f "$D/slurm.conf" >"$D/slurmctld.out" 2>&1 &
slurmctld=$!
"$SLURMD" -D -f "$D/slurm.conf" -N localhost >"$D/slurmd.out" 2>&1 &
slurmd=$!
read -r _ || true
cleanup
"#;

/// A running cluster.
pub struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
}

/// The cluster every test of this process shares, started on first use.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    // Never dropped: the supervisor's pipe closes when the process exits.
    CLUSTER.get_or_init(Cluster::start)
}

impl Cluster {
    /// Starts a cluster of its own and waits until its node is idle; stopped when dropped.
    pub fn start() -> Cluster {
        assert!(
            // SAFETY: geteuid(2) has no preconditions.
            unsafe { libc::geteuid() } == 0,
            "the Slurm tests start munged and slurmd, which must run as root"
        );
        let munged = binary("munged");
        let slurmctld = binary("slurmctld");
        let slurmd = binary("slurmd");
        let scancel = binary("scancel");
        let squeue = binary("squeue");
        binary("sbatch");
        binary("sinfo");

        let dir = tempfile::Builder::new()
            .prefix("orch-slurm-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        // munged refuses a socket whose directories are not all world-searchable.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod the cluster's directory");
        for sub in ["munge", "state", "spool"] {
            std::fs::create_dir(dir.join(sub)).expect("the cluster's directories");
        }
        write_munge_key(&dir.join("munge.key"));
        let conf = dir.join("slurm.conf");
        std::fs::write(&conf, slurm_conf(&dir)).expect("writing slurm.conf");

        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("orch-slurm-supervisor")
            .arg(&dir)
            .env("MUNGED", munged)
            .env("SLURMCTLD", slurmctld)
            .env("SLURMD", slurmd)
            .env("SCANCEL", scancel)
            .env("SQUEUE", squeue)
            // Its own process group: Ctrl-C on the tests reaches the daemons only through
            // the supervisor's cleanup, after this process is gone.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the cluster's supervisor");
        let stdin = child.stdin.take().expect("a piped stdin");
        let cluster = Cluster {
            dir,
            conf,
            supervisor: Mutex::new(Some((child, stdin))),
        };
        cluster.wait_idle();
        cluster
    }

    /// The cluster's `slurm.conf` (what `SLURM_CONF` must name).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// orch's client, talking to this cluster.
    pub fn client(&self) -> Client {
        Client::new()
            .unwrap_or_else(|e| panic!("{e}: {INSTALL}"))
            .with_config(&self.conf)
    }

    /// A Slurm command with `SLURM_CONF` set for this cluster.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(binary(name));
        command.env("SLURM_CONF", self.conf());
        command
    }

    /// Stops slurmctld (SIGTERM) and waits until it has exited.
    pub fn stop_controller(&self) {
        let pid = self.read_pid("slurmctld.pid");
        // SAFETY: kill(2) with a PID the controller wrote; the supervisor has not reaped it.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + START_TIMEOUT;
        // The controller removes its PID file as it exits.
        while self.dir.join("slurmctld.pid").exists() {
            assert!(Instant::now() < deadline, "slurmctld did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemons' logs, for a panic message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in [
            "munged.out",
            "munged.log",
            "slurmctld.out",
            "slurmctld.log",
            "slurmd.out",
            "slurmd.log",
        ] {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn read_pid(&self, file: &str) -> libc::pid_t {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(|| panic!("no PID in {file}:\n{}", self.logs()))
    }

    fn wait_idle(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self.port("SlurmctldPort");
        let controller = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // First the controller's port, so sinfo does not sit out MessageTimeout retrying.
        while TcpStream::connect_timeout(&controller, Duration::from_millis(200)).is_err() {
            self.check_alive(deadline, "slurmctld to listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            let output = self
                .command("sinfo")
                .args(["--noheader", "--nodes=localhost", "--format=%T"])
                .output()
                .expect("running sinfo");
            if String::from_utf8_lossy(&output.stdout).trim() == "idle" {
                return;
            }
            self.check_alive(deadline, "the node to be idle");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_alive(&self, deadline: Instant, waiting_for: &str) {
        let mut guard = self.supervisor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((child, _)) = guard.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "the cluster's supervisor exited ({status}):\n{}",
                self.logs()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "waited {START_TIMEOUT:?} for {waiting_for}:\n{}",
                self.logs()
            );
        }
    }

    fn port(&self, key: &str) -> u16 {
        let conf = std::fs::read_to_string(&self.conf).expect("reading slurm.conf");
        conf.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in slurm.conf"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let taken = self
            .supervisor
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((mut child, stdin)) = taken {
            // EOF on its stdin: the supervisor cancels jobs, stops the daemons, cleans up.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Where a Slurm or munge program is; panics naming the install script when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is missing: {INSTALL}"))
}

fn write_munge_key(path: &Path) {
    let mut key = vec![0u8; 1024];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .expect("reading /dev/urandom");
    let mut file = std::fs::File::create(path).expect("creating the munge key");
    file.write_all(&key).expect("writing the munge key");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o400))
        .expect("chmod the munge key");
}

/// Two distinct free ports on 127.0.0.1 (held together so they differ).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port on 127.0.0.1");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("a bound address").port();
    (port(&a), port(&b))
}

fn slurm_conf(dir: &Path) -> String {
    let (controller, node) = free_ports();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let d = dir.display();
    format!(
        "# A one-node cluster for orch's tests.
ClusterName=orchtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={controller}
SlurmdPort={node}
AuthType=auth/munge
AuthInfo=socket={d}/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
# Quick tests:
# - batch_sched_delay=0: a job is scheduled as it is submitted, not up to 3 s later;
#   sched_interval=1: the main loop retries pending jobs every second, not every minute.
SchedulerParameters=batch_sched_delay=0,sched_interval=1
# - a client gives up on an unreachable controller after 3 s, not 10 to 20.
MessageTimeout=3
# - cancelled or timed-out jobs get SIGKILL 2 s after SIGTERM, not 30.
KillWait=2
# - ended jobs stay visible to squeue for 10 minutes, longer than any test.
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory}
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
",
        memory = half_the_memory_mib(),
    )
}

/// Half of MemTotal: a node may not claim more memory than slurmd finds, and `--mem`
/// requests in the tests need some to ask for.
fn half_the_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(512, |kib| (kib / 1024 / 2).max(1))
}

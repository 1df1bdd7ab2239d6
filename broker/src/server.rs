//! The broker's daemon: the Unix socket the shims connect to, one task per
//! connected process, the tick that hands out compute shares, the watch on
//! the configuration file, and the metrics endpoint.

use crate::config::{Config, PolicySource};
use crate::identity::{self, Peer};
use crate::metrics::{Metrics, ResultLabels};
use crate::pages::{Budget, ProcessView};
use crate::pods::{KubeSource, Pods};
use crate::state::{ConnId, Reserve, State};
use crate::wire;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, info, warn};
use tslice_proto::{FrameBuf, Msg};

/// How often shares are recomputed and pages written.
pub const TICK: Duration = Duration::from_millis(10);
/// How long a reservation waits for siblings to return unused memory.
const RECLAIM_WAIT: Duration = Duration::from_millis(200);
/// How often the configuration file is looked at (besides SIGHUP).
const CONFIG_POLL: Duration = Duration::from_millis(250);
/// How long a connection may take to say Hello (or ask for the status).
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// After a restart, how long reservations wait for the processes of the
/// previous broker to reconnect and report what they hold (their shims
/// retry at least every 250 ms), so that nobody is granted memory a
/// sibling that has not reconnected yet still holds.
pub const RECOVERY: Duration = Duration::from_secs(1);
/// Messages queued for a process that does not read them: beyond this the
/// connection is closed (and the process's memory returned).
const OUTBOX: usize = 64;
/// Reservations a process may have waiting at once (the shim has one).
const RESERVES_QUEUED: usize = 4;

/// A connected process's mailbox.
struct Conn {
    tx: mpsc::Sender<Msg>,
    /// Closes the connection.
    kill: Arc<Notify>,
    pid: u32,
    /// The connection's socket (to tell whether the process has closed it).
    sock: OwnedFd,
}

pub struct Broker {
    pub state: Mutex<State>,
    pub metrics: Metrics,
    /// Writers of the connected processes.
    txs: Mutex<HashMap<ConnId, Conn>>,
    /// Signalled whenever memory is returned to a ledger.
    released: Notify,
    started: Instant,
    /// Until when reservations wait for reconnecting processes (a restart).
    recovering_until: Mutex<Option<Instant>>,
    config_path: Option<PathBuf>,
    metrics_addr: Option<std::net::SocketAddr>,
    /// On Kubernetes: the node's pods (the policy source is made of these
    /// and the configuration file).
    pods: Option<Arc<Pods>>,
    /// How long a process whose pod is not known yet waits for it.
    pod_wait: Duration,
    /// The node whose pods are watched.
    node: Option<String>,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Broker {
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Arc<Broker> {
        let pods = config
            .kubernetes
            .as_ref()
            .map(|_| Arc::new(Pods::default()));
        let pod_wait =
            Duration::from_nanos(config.kubernetes.as_ref().map_or(0, |k| k.pod_wait_ns));
        let node = config
            .kubernetes
            .as_ref()
            .and_then(|k| k.node("the configuration").ok());
        Arc::new(Broker {
            node,
            metrics_addr: config.metrics,
            state: Mutex::new(State::new(source(config, &pods))),
            pods,
            pod_wait,
            metrics: Metrics::new(),
            txs: Mutex::new(HashMap::new()),
            released: Notify::new(),
            started: Instant::now(),
            recovering_until: Mutex::new(None),
            config_path,
        })
    }

    /// This broker replaces one that stopped: its processes are reconnecting.
    pub fn recovering(&self) {
        *self
            .recovering_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + RECOVERY);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, id: ConnId, m: Msg) {
        if let Some(c) = self.txs.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(m) {
                c.kill.notify_one();
            }
        }
    }

    /// Whether any process is connected.
    pub fn has_processes(&self) -> bool {
        !self.state().procs.is_empty()
    }

    /// The status JSON.
    pub fn status_json(&self) -> String {
        crate::status::status(&self.state(), self.started.elapsed().as_secs_f64()).to_string()
    }

    /// Applies a new configuration file (a reload with an invalid file keeps
    /// the last good policy and says why).
    pub fn reload(&self) {
        let Some(path) = &self.config_path else {
            return;
        };
        match Config::load(path) {
            Ok(cfg) => {
                if cfg.kubernetes.is_some() != self.pods.is_some() {
                    warn!("[kubernetes] is read at start only: restart the broker to change it");
                }
                let over = self.state().reload(source(cfg, &self.pods), now_ns());
                for (id, dev) in over {
                    self.send(id, Msg::Reclaim { dev });
                }
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabels {
                        result: "ok".into(),
                    })
                    .inc();
                info!(config = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabels {
                        result: "invalid".into(),
                    })
                    .inc();
                error!("{e}; keeping the last good configuration");
            }
        }
    }

    /// The policy source changed (a pod): every process classified again.
    pub fn reapply(&self) {
        let over = self.state().reapply(now_ns());
        for (id, dev) in over {
            self.send(id, Msg::Reclaim { dev });
        }
    }

    fn reject(&self, why: &str) {
        self.metrics
            .rejected
            .get_or_create(&ResultLabels { result: why.into() })
            .inc();
    }
}

/// The policy source of a configuration: the file's, or on Kubernetes the
/// node's pods with the file's defaults and ceilings.
fn source(config: Config, pods: &Option<Arc<Pods>>) -> Box<dyn PolicySource> {
    match pods {
        Some(p) => Box::new(KubeSource {
            config,
            pods: p.clone(),
        }),
        None => Box::new(config),
    }
}

/// Binds the socket: any local process may connect (its identity comes from
/// the kernel, not from what it says), the directory is created if needed,
/// and a stale socket of a previous broker is replaced (true: there was
/// one, so this broker is a restart and its processes are reconnecting).
pub fn bind(path: &Path) -> io::Result<(UnixListener, bool)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let replaced = match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok((l, replaced))
}

/// Serves until the process is stopped.
pub async fn serve(broker: Arc<Broker>, listener: UnixListener) -> io::Result<()> {
    broker.metrics.up.set(1);
    tokio::spawn(ticker(broker.clone()));
    tokio::spawn(config_watch(broker.clone()));
    if let (Some(pods), Some(node)) = (broker.pods.clone(), broker.node.clone()) {
        tokio::spawn(crate::pods::watch(pods.clone(), node));
        let b = broker.clone();
        tokio::spawn(async move {
            loop {
                pods.changed.notified().await;
                b.reapply();
            }
        });
    }
    let metrics_addr = broker.metrics_addr;
    if let Some(addr) = metrics_addr {
        let b = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics_server(b, addr).await {
                error!("metrics endpoint {addr}: {e}");
            }
        });
    }
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors (or memory): the connections that are
                // open go on; new ones wait in the backlog until some close.
                broker.reject("accept-failed");
                warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let b = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(b.clone(), stream).await {
                debug!("connection ended: {e}");
            }
        });
    }
}

async fn ticker(b: Arc<Broker>) {
    let mut t = tokio::time::interval(TICK);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let s = &mut *b.state();
        s.tick(now_ns());
        b.metrics.observe_tick(s);
    }
}

async fn config_watch(b: Arc<Broker>) {
    let Some(path) = b.config_path.clone() else {
        return;
    };
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = mtime(&path);
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot watch SIGHUP: {e}");
            None
        }
    };
    loop {
        let hup_fired = async {
            match hup.as_mut() {
                Some(h) => h.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup_fired => {
                info!("SIGHUP: reloading the configuration");
                last = mtime(&path);
                b.reload();
            }
            _ = tokio::time::sleep(CONFIG_POLL) => {
                let now = mtime(&path);
                if now != last {
                    last = now;
                    b.reload();
                }
            }
        }
    }
}

async fn metrics_server(b: Arc<Broker>, addr: std::net::SocketAddr) -> io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let b = b.clone();
            async move {
                b.metrics.refresh(&b.state());
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    b.metrics.encode(),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(addr).await?;
    info!("metrics at http://{addr}/metrics");
    axum::serve(l, app).await
}

/// Whether a peer may read the node's status: root, or the broker's user.
fn is_admin(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

async fn connection(b: Arc<Broker>, mut stream: UnixStream) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let (Some(pid), uid, gid) = (cred.pid(), cred.uid(), cred.gid()) else {
        b.reject("no-pid");
        return Ok(());
    };
    let pid = pid as u32;
    let mut fb = FrameBuf::new();
    // The process page (the first descriptor sent; any others are closed).
    let mut fds: Vec<OwnedFd> = Vec::new();
    let first = async {
        loop {
            match fb.next_msg() {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                Err(e) => {
                    b.reject("malformed");
                    warn!(pid, "closing the connection: {e}");
                    return Ok(None);
                }
            }
            if !wire::recv_with_fds(&stream, &mut fb, &mut fds).await? {
                return Ok::<_, io::Error>(None);
            }
        }
    };
    let first = match tokio::time::timeout(HELLO_WAIT, first).await {
        Ok(r) => match r? {
            Some(m) => m,
            None => return Ok(()),
        },
        Err(_) => {
            b.reject("no-hello");
            debug!(
                pid,
                "closing a connection that said nothing for {HELLO_WAIT:?}"
            );
            return Ok(());
        }
    };
    let hello = match first {
        Msg::Hello(h) => h,
        Msg::StatusRequest => return status_reply(&b, stream, uid).await,
        Msg::ViewRequest {
            uuid,
            total,
            ordinal,
        } => return view_reply(&b, stream, (pid, uid, gid), (uuid, total, ordinal)).await,
        other => {
            b.reject("unexpected");
            warn!(pid, "closing the connection: expected Hello, got {other:?}");
            return Ok(());
        }
    };
    let Some((peer, pidfd)) = identify(&b, &mut stream, (pid, uid, gid)).await? else {
        return Ok(());
    };
    // A pod the watch has not delivered yet (the process started right
    // after it was scheduled): wait a little for it, then take the defaults.
    let waited = Instant::now();
    while !b.state().source.known(&peer) && waited.elapsed() < b.pod_wait {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = fds.drain(..).next();
    let view = page.and_then(|fd| match ProcessView::open(fd) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(
                pid,
                "the process page is unusable ({e}); its demand is unknown"
            );
            None
        }
    });
    let (budget, reader) = Budget::new()?;
    let sock = stream.as_fd().try_clone_to_owned()?;
    let (tx, mut rx) = mpsc::channel::<Msg>(OUTBOX);
    let kill = Arc::new(Notify::new());
    // One connection per process (descriptors and pages are the broker's to
    // spend, and a process needs one): looked up and taken at once.
    let admitted = {
        let mut txs = b.txs.lock().unwrap_or_else(|p| p.into_inner());
        if connected_already(&txs, pid) {
            None
        } else {
            let (id, tenant) = b
                .state()
                .admit(peer.clone(), &hello, budget, view, now_ns());
            txs.insert(
                id,
                Conn {
                    tx,
                    kill: kill.clone(),
                    pid,
                    sock,
                },
            );
            Some((id, tenant))
        }
    };
    let Some((id, tenant)) = admitted else {
        b.reject("already-connected");
        warn!(pid, uid, "refusing a second connection of the process");
        let (_, mut wr) = stream.into_split();
        let reason = format!(
            "process {pid} is already connected to the broker (one connection per process)"
        );
        return wire::write_msg(&mut wr, &Msg::Refused { reason }).await;
    };
    // From here on the process is in the state: whatever ends this task
    // (even a panic) takes it out again.
    let mut guard = Finish {
        b: &b,
        id,
        pid,
        reason: "welcome failed".into(),
    };
    b.metrics.connections.inc();
    info!(pid, uid, cgroup = %peer.cgroup, %tenant, devices = hello.devices.len(), "process connected");
    let welcome = Msg::Welcome {
        tenant: tenant.clone(),
        flags: 0,
    };
    let sent = wire::send_with_fd(&stream, &welcome, reader.as_raw_fd()).await;
    drop(reader);
    sent?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if wire::write_msg(&mut wr, &m).await.is_err() {
                break;
            }
        }
    });
    let exited = async {
        // The pidfd becomes readable when the process exits (or is killed):
        // its memory comes back at once, whoever still holds its socket.
        // SAFETY: an OwnedFd keeps its descriptor open and the same until it
        // is dropped with the AsyncFd.
        match unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    // Reservations wait (for siblings to return memory, for a restart's
    // reconnections) in a task of their own, so the process's Releases are
    // read meanwhile: two siblings reserving at once each get what the
    // other returns.
    let (rtx, mut rrx) = mpsc::channel::<(u32, u32, u64)>(RESERVES_QUEUED);
    let rb = b.clone();
    let reserver = tokio::spawn(async move {
        while let Some((req, dev, bytes)) = rrx.recv().await {
            let granted = reserve(&rb, id, dev, bytes).await;
            rb.send(
                id,
                Msg::Grant {
                    req,
                    bytes: granted,
                },
            );
        }
    });
    guard.reason = tokio::select! {
        r = serve_process(&b, id, &mut rd, &mut fb, &rtx) => match r {
            Ok(()) => "disconnected".to_string(),
            Err(e) => {
                b.reject("malformed");
                warn!(pid, %tenant, "closing the connection: {e}");
                format!("closed: {e}")
            }
        },
        _ = exited => "exited".to_string(),
        _ = kill.notified() => {
            b.reject("not-reading");
            warn!(pid, %tenant, "closing the connection: the process does not read its messages");
            "not reading its messages".to_string()
        }
    };
    reserver.abort();
    writer.abort();
    Ok(())
}

/// Whether `pid` already has a connection that is still open (a process has
/// one; a new program after `exec` finds its old one closed, and that one is
/// let go at once).
fn connected_already(txs: &HashMap<ConnId, Conn>, pid: u32) -> bool {
    let mut open = false;
    for c in txs.values().filter(|c| c.pid == pid) {
        if identity::hung_up(c.sock.as_raw_fd()) {
            c.kill.notify_one();
        } else {
            open = true;
        }
    }
    open
}

/// Takes a process out of the state when its connection task ends, however
/// it ends.
struct Finish<'a> {
    b: &'a Broker,
    id: ConnId,
    pid: u32,
    reason: String,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let b = self.b;
        b.txs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        b.state().remove(self.id);
        b.released.notify_waiters();
        info!(
            pid = self.pid,
            "process gone ({}); its memory is back in its tenant's ledger", self.reason
        );
    }
}

async fn serve_process(
    b: &Arc<Broker>,
    id: ConnId,
    rd: &mut tokio::net::unix::OwnedReadHalf,
    fb: &mut FrameBuf,
    reserves: &mpsc::Sender<(u32, u32, u64)>,
) -> io::Result<()> {
    while let Some(m) = wire::read_msg(rd, fb).await? {
        match m {
            Msg::Reserve { req, dev, bytes } => {
                if reserves.try_send((req, dev, bytes)).is_err() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than {RESERVES_QUEUED} reservations waiting at once"),
                    ));
                }
            }
            Msg::Release { dev, bytes } => {
                b.state().release(id, dev, bytes);
                b.released.notify_waiters();
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected {other:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// A reservation: granted at once, or after siblings returned what they
/// held unused, or refused.
async fn reserve(b: &Arc<Broker>, id: ConnId, dev: u32, bytes: u64) -> u64 {
    let recovering = *b.recovering_until.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(until) = recovering {
        tokio::time::sleep_until(until.into()).await;
    }
    let deadline = Instant::now() + RECLAIM_WAIT;
    let mut asked = false;
    loop {
        let released = b.released.notified();
        let outcome = b.state().reserve(id, dev, bytes);
        match outcome {
            Reserve::Granted(g) => return g,
            Reserve::Denied => return 0,
            Reserve::Reclaim(siblings) => {
                if !asked {
                    asked = true;
                    for (s, d) in siblings {
                        b.send(s, Msg::Reclaim { dev: d });
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, released).await.is_err() {
                    b.state().deny(id, dev);
                    return 0;
                }
            }
        }
    }
}

/// Who is on the other end, from the kernel: the peer's identity, and a
/// pidfd that pins the process (if it died and its pid was reused, the
/// pidfd says so and nothing is answered). None: refused (and told why),
/// or already gone.
async fn identify(
    b: &Broker,
    stream: &mut UnixStream,
    (pid, uid, gid): (u32, u32, u32),
) -> io::Result<Option<(Peer, OwnedFd)>> {
    let pidfd = match identity::peer_pidfd(stream.as_raw_fd(), pid) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            b.reject("pid-reused");
            warn!(pid, uid, "{e}");
            let reason = e.to_string();
            wire::write_msg(stream, &Msg::Refused { reason }).await?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let cgroup = identity::cgroup_of(pid)?;
    if identity::pidfd_exited(&pidfd) || identity::hung_up(stream.as_raw_fd()) {
        return Ok(None);
    }
    let peer = Peer {
        pid,
        uid,
        gid,
        cgroup,
    };
    Ok(Some((peer, pidfd)))
}

/// Answers a [`Msg::ViewRequest`]: the asking process's tenant (from the
/// kernel, as for a Hello) and its view of the device. The process is not
/// admitted: nothing is reserved or counted for it.
async fn view_reply(
    b: &Broker,
    mut stream: UnixStream,
    who: (u32, u32, u32),
    (uuid, total, ordinal): ([u8; 16], u64, u32),
) -> io::Result<()> {
    let Some((peer, _pidfd)) = identify(b, &mut stream, who).await? else {
        return Ok(());
    };
    let v = b.state().view(&peer, &uuid, total, ordinal);
    b.metrics.views.inc();
    wire::write_msg(&mut stream, &Msg::View(v)).await
}

async fn status_reply(b: &Broker, stream: UnixStream, uid: u32) -> io::Result<()> {
    let (_, mut wr) = stream.into_split();
    if !is_admin(uid) {
        b.reject("not-admin");
        let reason =
            format!("uid {uid} may not read the node's status (root or the broker's user only)");
        return wire::write_msg(&mut wr, &Msg::Refused { reason }).await;
    }
    let json = b.status_json();
    // In parts that fit a frame, then an empty part.
    let mut rest = json.as_str();
    while !rest.is_empty() {
        let mut n = rest.len().min(tslice_proto::MAX_FRAME - 1024);
        while !rest.is_char_boundary(n) {
            n -= 1;
        }
        wire::write_msg(
            &mut wr,
            &Msg::Status {
                json: rest[..n].to_string(),
            },
        )
        .await?;
        rest = &rest[n..];
    }
    wire::write_msg(
        &mut wr,
        &Msg::Status {
            json: String::new(),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_does_not_read_its_messages_is_cut_off() {
        let b = Broker::new(Config::default(), None);
        let (tx, _rx) = mpsc::channel(OUTBOX);
        let kill = Arc::new(Notify::new());
        let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        b.txs.lock().unwrap().insert(
            7,
            Conn {
                tx,
                kill: kill.clone(),
                pid: 1,
                sock: sock.into(),
            },
        );
        for _ in 0..OUTBOX {
            b.send(7, Msg::Reclaim { dev: 0 });
        }
        let cut = tokio::time::timeout(Duration::from_millis(1), kill.notified()).await;
        assert!(cut.is_err(), "a full outbox is not yet over the bound");
        b.send(7, Msg::Reclaim { dev: 0 });
        tokio::time::timeout(Duration::from_secs(1), kill.notified())
            .await
            .expect("one more message than the outbox holds closes the connection");
    }
}

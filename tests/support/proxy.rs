//! A fault-injecting TCP proxy: tests connect to the database through it and cut, refuse
//! or slow the connections while they are live, or cut one at a precise protocol moment.
//!
//! It forwards bytes without understanding them, so a fault "at a moment" is a byte
//! pattern: the client→server stream of one connection contains the given patterns in
//! order (SQL text, or a bound parameter such as a lock name), and the connection is cut
//! either before that chunk is forwarded or right after the server answers it (the server
//! did the work, the client never hears of it). Connect without TLS (see
//! [`pg_options`], [`mysql_options`]) so the patterns can be seen.
//!
//! Every control takes effect on live connections too, and has taken effect when it
//! returns; dropping the proxy shuts it down and closes every connection.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// How new connections are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Accepted, then closed at once (the client sees the connection closed during the
    /// handshake).
    Close,
    /// The port is closed: the client sees "connection refused", as when the server is
    /// down. The same port is bound again when healed.
    Down,
}

/// When an armed fault cuts the matching connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Before forwarding the client's chunk that completed the patterns: the server never
    /// receives it.
    BeforeSending,
    /// When the server's next bytes arrive after that chunk (its answer): the server did
    /// the work, the client never hears of it.
    BeforeAnswer,
}

/// An armed one-shot fault; [`Fault::fired`] says whether it hit a connection yet.
#[derive(Debug, Clone)]
pub struct Fault {
    fired: Arc<AtomicBool>,
}

impl Fault {
    /// `true` once the fault cut a connection.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// The proxy; see the module documentation.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The refusal in force, numbered; the accept loop reports the number it applied.
    mode: watch::Sender<(u64, Option<Refusal>)>,
    applied: watch::Receiver<u64>,
    accept: AbortHandle,
}

struct Shared {
    target: String,
    delay_ms: AtomicU64,
    accepted: AtomicUsize,
    cut: AtomicUsize,
    next_id: AtomicU64,
    /// Connection tasks (aborting one closes both of its sockets).
    connections: Mutex<Vec<AbortHandle>>,
    armed: Mutex<Option<Armed>>,
}

struct Armed {
    id: u64,
    patterns: Vec<Vec<u8>>,
    cut: Cut,
    fired: Arc<AtomicBool>,
    /// For [`Cut::BeforeAnswer`]: the connection whose client sent the patterns.
    answering: Option<u64>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target` (`host:port`).
    pub async fn start(target: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy: local address");
        let shared = Arc::new(Shared {
            target: target.into(),
            delay_ms: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            cut: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            connections: Mutex::new(Vec::new()),
            armed: Mutex::new(None),
        });
        let (mode, watched) = watch::channel((0, None));
        let (report, applied) = watch::channel(0);
        let accept = tokio::spawn(accept_loop(
            addr,
            listener,
            Arc::clone(&shared),
            watched,
            report,
        ))
        .abort_handle();
        Self {
            addr,
            shared,
            mode,
            applied,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection now (both sides).
    pub fn cut_all(&self) {
        let live = std::mem::take(&mut *lock(&self.shared.connections));
        for task in live {
            if !task.is_finished() {
                task.abort();
                self.shared.cut.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Refuses new connections until [`Proxy::heal`] (open ones stay: cut them too for an
    /// outage).
    pub async fn refuse(&self, how: Refusal) {
        self.set_refusal(Some(how)).await;
    }

    /// Accepts and forwards again, and stops delaying.
    pub async fn heal(&self) {
        self.shared.delay_ms.store(0, Ordering::SeqCst);
        self.set_refusal(None).await;
    }

    /// Waits until the accept loop applied `refusal` (closed or bound the port again).
    async fn set_refusal(&self, refusal: Option<Refusal>) {
        let number = self.mode.borrow().0 + 1;
        self.mode.send_replace((number, refusal));
        let mut applied = self.applied.clone();
        applied
            .wait_for(|n| *n >= number)
            .await
            .expect("proxy: the accept loop stopped");
    }

    /// Delays every forwarded chunk, both ways, by `delay`.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Arms a one-shot fault (replacing one not fired yet): the first connection whose
    /// client→server stream contains `patterns` in that order is cut at `cut`.
    pub fn arm(&self, patterns: &[&str], cut: Cut) -> Fault {
        let patterns: Vec<&[u8]> = patterns.iter().map(|p| p.as_bytes()).collect();
        self.arm_bytes(&patterns, cut)
    }

    /// [`Proxy::arm`] with byte patterns (a bound parameter in binary form, for example).
    pub fn arm_bytes(&self, patterns: &[&[u8]], cut: Cut) -> Fault {
        assert!(
            !patterns.is_empty() && patterns.iter().all(|p| !p.is_empty()),
            "empty pattern"
        );
        let fired = Arc::new(AtomicBool::new(false));
        *lock(&self.shared.armed) = Some(Armed {
            id: self.shared.next_id.fetch_add(1, Ordering::SeqCst),
            patterns: patterns.iter().map(|p| p.to_vec()).collect(),
            cut,
            fired: Arc::clone(&fired),
            answering: None,
        });
        Fault { fired }
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections the proxy cut so far (by [`Proxy::cut_all`] or a fault).
    pub fn cut(&self) -> usize {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in std::mem::take(&mut *lock(&self.shared.connections)) {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(
    addr: SocketAddr,
    listener: TcpListener,
    shared: Arc<Shared>,
    mut mode: watch::Receiver<(u64, Option<Refusal>)>,
    applied: watch::Sender<u64>,
) {
    let mut listener = Some(listener);
    loop {
        let (number, refusal) = *mode.borrow_and_update();
        if refusal == Some(Refusal::Down) {
            listener = None;
            applied.send_replace(number);
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        let bound = match &listener {
            Some(bound) => bound,
            None => listener.insert(rebind(addr).await),
        };
        applied.send_replace(number);
        tokio::select! {
            changed = mode.changed() => if changed.is_err() { return },
            accepted = bound.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                // The mode now, not when the wait began.
                if mode.borrow().1.is_some() {
                    drop(client);
                    continue;
                }
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(forward(id, client, Arc::clone(&shared)));
                let mut live = lock(&shared.connections);
                live.retain(|t| !t.is_finished());
                live.push(task.abort_handle());
            }
        }
    }
}

/// Binds the proxy's port again after [`Refusal::Down`] (retrying briefly: the old
/// socket may take a moment to go).
async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..500 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("proxy: cannot bind {addr} again after Refusal::Down");
}

async fn forward(id: u64, client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(&shared.target).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let ((client_read, client_write), (server_read, server_write)) =
        (client.into_split(), server.into_split());
    // Whichever side ends (closed, failed or cut) closes both sockets.
    tokio::select! {
        () = upstream(id, client_read, server_write, &shared) => {}
        () = downstream(id, server_read, client_write, &shared) => {}
    }
}

/// Client → server, watching for the armed patterns.
async fn upstream(id: u64, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let mut matcher = Matcher::default();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if shared.client_sent(id, &mut matcher, &buf[..n]) {
            shared.cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
        shared.pause().await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Server → client, cutting when an armed [`Cut::BeforeAnswer`] waits for this answer.
async fn downstream(id: u64, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if shared.server_answered(id) {
            shared.cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
        shared.pause().await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Shared {
    async fn pause(&self) {
        let ms = self.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Feeds a client chunk to the matcher; `true` when the connection is to be cut now.
    fn client_sent(&self, id: u64, matcher: &mut Matcher, chunk: &[u8]) -> bool {
        let mut armed = lock(&self.armed);
        let Some(fault) = armed.as_mut() else {
            return false;
        };
        if fault.answering.is_some() || !matcher.feed(fault, chunk) {
            return false;
        }
        match fault.cut {
            Cut::BeforeSending => {
                fault.fired.store(true, Ordering::SeqCst);
                *armed = None;
                true
            }
            Cut::BeforeAnswer => {
                fault.answering = Some(id);
                false
            }
        }
    }

    /// `true` when this connection's answer is the one an armed fault waits for.
    fn server_answered(&self, id: u64) -> bool {
        let mut armed = lock(&self.armed);
        match armed.as_ref() {
            Some(fault) if fault.answering == Some(id) => {
                fault.fired.store(true, Ordering::SeqCst);
                *armed = None;
                true
            }
            _ => false,
        }
    }
}

/// One connection's progress through the armed fault's patterns, across chunks.
#[derive(Default)]
struct Matcher {
    fault: u64,
    matched: usize,
    /// The end of the previous chunks, so a pattern split across two chunks is found.
    tail: Vec<u8>,
}

impl Matcher {
    /// `true` once every pattern has been seen, in order.
    fn feed(&mut self, fault: &Armed, chunk: &[u8]) -> bool {
        if self.fault != fault.id {
            *self = Self {
                fault: fault.id,
                ..Self::default()
            };
        }
        let mut seen = std::mem::take(&mut self.tail);
        seen.extend_from_slice(chunk);
        let mut from = 0;
        while let Some(pattern) = fault.patterns.get(self.matched) {
            match find(&seen[from..], pattern) {
                Some(at) => {
                    from += at + pattern.len();
                    self.matched += 1;
                }
                None => break,
            }
        }
        let longest = fault.patterns.iter().map(Vec::len).max().unwrap_or(1);
        let keep_from = from.max(seen.len().saturating_sub(longest - 1));
        self.tail = seen.split_off(keep_from);
        self.matched == fault.patterns.len()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `url`'s connect options, through `proxy`, without TLS (so patterns can be matched).
pub fn pg_options(proxy: &Proxy, url: &str) -> sqlx::postgres::PgConnectOptions {
    sqlx::postgres::PgConnectOptions::from_str(url)
        .unwrap_or_else(|e| panic!("PostgreSQL URL {url}: {e}"))
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

/// `url`'s connect options, through `proxy`, without TLS (so patterns can be matched).
pub fn mysql_options(proxy: &Proxy, url: &str) -> sqlx::mysql::MySqlConnectOptions {
    sqlx::mysql::MySqlConnectOptions::from_str(url)
        .unwrap_or_else(|e| panic!("MySQL URL {url}: {e}"))
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled)
}

/// The `host:port` of a database URL (the proxy's target).
pub fn target_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    assert!(
        host_port.contains(':'),
        "the test URL {url} must name its port for the proxy"
    );
    host_port.to_owned()
}

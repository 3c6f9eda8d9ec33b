//! One outgoing relay connection, to a root: blocking sockets and plain
//! threads (a reader, which calls the handler for every datagram, and a
//! writer, which drains a bounded queue).

use super::*;

/// Why a connection's reader stopped.
#[derive(Debug, thiserror::Error)]
enum ReadEnd {
    #[error("closed by the peer")]
    Eof,
    #[error("no record for {0:?}")]
    Idle(Duration),
    #[error("framing error: {0}")]
    Framing(#[from] RecordError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads records until the connection ends, handing each payload to
/// `on_record`. Closes after `idle` without a complete record, so a peer
/// trickling bytes cannot hold a connection open.
fn read_records(
    stream: &mut TcpStream,
    idle: Duration,
    counters: &Counters,
    mut on_record: impl FnMut(&mut [u8]),
) -> ReadEnd {
    // Wake now and then to check the idle deadline.
    let tick = (idle / 4).max(Duration::from_millis(10));
    if let Err(e) = stream.set_read_timeout(Some(tick)) {
        return ReadEnd::Io(e);
    }
    let mut decoder = RecordDecoder::new();
    let mut last_record = Instant::now();
    loop {
        match stream.read(decoder.spare(READ_CHUNK_BYTES)) {
            Ok(0) => return ReadEnd::Eof,
            Ok(n) => decoder.commit(n),
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return ReadEnd::Io(e),
        }
        let mut got = 0;
        while let Some(record) = decoder.next_record() {
            match record {
                Ok(payload) => {
                    got += 1;
                    on_record(payload);
                }
                Err(e) => {
                    Counters::add(&counters.records_in, got);
                    Counters::add(&counters.framing_errors, 1);
                    return ReadEnd::Framing(e);
                }
            }
        }
        if got > 0 {
            Counters::add(&counters.records_in, got);
            last_record = Instant::now();
        } else if last_record.elapsed() >= idle {
            return ReadEnd::Idle(idle);
        }
    }
}

/// Writes queued records until the queue's sender is dropped or a write
/// fails; on failure shuts the socket down so the reader ends too.
fn write_records(rx: &Receiver<Vec<u8>>, mut stream: TcpStream, counters: &Counters) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        // One record alone goes out as it is; a burst is gathered into one write.
        let mut n = 1;
        let result = match rx.try_recv() {
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => stream.write_all(&first),
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                n += 1;
                while batch.len() < WRITE_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(r) => {
                            batch.extend_from_slice(&r);
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                stream.write_all(&batch)
            }
        };
        if let Err(e) = result {
            debug!(peer = ?stream.peer_addr().ok(), error = %e, "TCP relay write failed");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        Counters::add(&counters.records_out, n);
    }
}

/// Sets the options every relay connection gets.
fn prepare_stream(stream: &TcpStream, config: &TcpRelayConfig) -> io::Result<()> {
    // Each record is a datagram someone waits for: no Nagle delay.
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(config.write_timeout))
}

fn spawn_writer(
    name: String,
    rx: Receiver<Vec<u8>>,
    stream: TcpStream,
    counters: Arc<impl AsRef<Counters> + Send + Sync + 'static>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(WRITER_STACK_BYTES)
        .spawn(move || write_records(&rx, stream, (*counters).as_ref()))
}

/// One outgoing relay connection, to a root.
///
/// [`send`](Self::send) connects as needed, in the background: the caller
/// never waits. After a failure the next attempt waits 1 s, doubling up to
/// 30 s, and is only made when `send` is called again. Dropping the client
/// closes the connection.
pub struct TcpRelayClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    handler: Arc<dyn TcpRelayClientHandler>,
    config: TcpRelayConfig,
    state: Mutex<ClientState>,
    counters: Counters,
}

impl AsRef<Counters> for ClientInner {
    fn as_ref(&self) -> &Counters {
        &self.counters
    }
}

#[derive(Default)]
struct ClientState {
    conn: Option<ClientConn>,
    /// Numbers connections, so a thread of a replaced one leaves the new one alone.
    generation: u64,
    retry: Retry,
}

struct ClientConn {
    to: SocketAddr,
    generation: u64,
    link: Link,
}

enum Link {
    /// Records waiting for the connection.
    Connecting(VecDeque<Vec<u8>>),
    Connected {
        tx: SyncSender<Vec<u8>>,
        /// A clone of the socket, to shut it down.
        stream: TcpStream,
    },
}

/// Backoff after failures to connect (or connections that ended before
/// bringing a single record, e.g. a server at its limit).
#[derive(Default)]
struct Retry {
    addr: Option<SocketAddr>,
    delay: Duration,
    not_before: Option<Instant>,
}

impl Retry {
    fn failed(&mut self, to: SocketAddr, config: &TcpRelayConfig, now: Instant) {
        self.delay = if self.addr == Some(to) && self.not_before.is_some() {
            (self.delay * 2).min(config.retry_max)
        } else {
            config.retry_min
        };
        self.addr = Some(to);
        self.not_before = Some(now + self.delay);
    }

    fn blocks(&self, to: SocketAddr, now: Instant) -> bool {
        self.addr == Some(to) && self.not_before.is_some_and(|t| now < t)
    }
}

impl ClientState {
    /// Drops the connection (made or being made); its threads end on their own.
    fn drop_conn(&mut self) {
        if let Some(ClientConn {
            link: Link::Connected { stream, .. },
            ..
        }) = self.conn.take()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn is_current(&self, generation: u64) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.generation == generation)
    }
}

impl TcpRelayClient {
    /// A client with the default limits and timers, not connected.
    pub fn new(handler: Arc<dyn TcpRelayClientHandler>) -> TcpRelayClient {
        Self::with_config(TcpRelayConfig::default(), handler)
    }

    /// [`new`](Self::new) with other limits and timers.
    pub fn with_config(
        config: TcpRelayConfig,
        handler: Arc<dyn TcpRelayClientHandler>,
    ) -> TcpRelayClient {
        TcpRelayClient {
            inner: Arc::new(ClientInner {
                handler,
                config,
                state: Mutex::new(ClientState::default()),
                counters: Counters::default(),
            }),
        }
    }

    /// Queues `datagram` for the server at `to`, without blocking. Not
    /// connected there (or connected elsewhere, which is then dropped):
    /// starts connecting if `datagram` is a HELLO, unless waiting out a
    /// backoff, and holds a few datagrams until connected. False if the
    /// datagram was not queued (queue full, backing off, not a HELLO while
    /// not connected, empty or too long).
    pub fn send(&self, to: SocketAddr, datagram: &[u8]) -> bool {
        let mut record = Vec::new();
        if let Err(e) = encode_record(datagram, &mut record) {
            debug!(%to, error = %e, "TCP relay datagram not sent");
            return false;
        }
        let inner = &self.inner;
        let mut st = inner.lock_state();
        if st.conn.as_ref().is_some_and(|c| c.to != to) {
            debug!(%to, "TCP relay moving to another server");
            st.drop_conn();
        }
        let Some(conn) = st.conn.as_mut() else {
            // A server closes a connection that does not begin with a HELLO;
            // the node says HELLO to a root it does not hear from every second.
            if st.retry.blocks(to, Instant::now()) || !is_hello(datagram) {
                Counters::add(&inner.counters.dropped, 1);
                return false;
            }
            return self.connect(st, to, record);
        };
        let queued = match &mut conn.link {
            Link::Connecting(q) => {
                if q.len() < inner.config.connecting_queue_records {
                    q.push_back(record);
                    true
                } else {
                    false
                }
            }
            Link::Connected { tx, .. } => tx.try_send(record).is_ok(),
        };
        if !queued {
            Counters::add(&inner.counters.dropped, 1);
        }
        queued
    }

    /// Starts connecting to `to` with `record` queued (`st` locked, so two
    /// senders do not both start).
    fn connect(
        &self,
        mut st: MutexGuard<'_, ClientState>,
        to: SocketAddr,
        record: Vec<u8>,
    ) -> bool {
        let inner = &self.inner;
        let generation = {
            st.generation += 1;
            let generation = st.generation;
            st.conn = Some(ClientConn {
                to,
                generation,
                link: Link::Connecting(VecDeque::from([record])),
            });
            drop(st);
            generation
        };
        let thread_inner = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("vnet-tcp-client".into())
            .spawn(move || thread_inner.run(to, generation));
        if let Err(e) = spawned {
            warn!(error = %e, "TCP relay client thread");
            let mut st = inner.lock_state();
            if st.is_current(generation) {
                st.conn = None;
            }
            Counters::add(&inner.counters.dropped, 1);
            return false;
        }
        true
    }

    /// Drops the connection, made or being made.
    pub fn close(&self) {
        self.inner.lock_state().drop_conn();
    }

    /// The server connected to (not while still connecting).
    pub fn connected_to(&self) -> Option<SocketAddr> {
        match &self.inner.lock_state().conn {
            Some(ClientConn {
                to,
                link: Link::Connected { .. },
                ..
            }) => Some(*to),
            _ => None,
        }
    }

    /// Whether a connection is established.
    pub fn is_connected(&self) -> bool {
        self.connected_to().is_some()
    }

    /// The counters.
    pub fn stats(&self) -> TcpRelayStats {
        self.inner.counters.snapshot()
    }
}

impl Drop for TcpRelayClient {
    fn drop(&mut self) {
        self.close();
    }
}

impl ClientInner {
    fn lock_state(&self) -> MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection's thread: connects, starts the writer, then reads.
    fn run(self: &Arc<Self>, to: SocketAddr, generation: u64) {
        let connected =
            TcpStream::connect_timeout(&to, self.config.connect_timeout).and_then(|s| {
                prepare_stream(&s, &self.config)?;
                let clones = (s.try_clone()?, s.try_clone()?);
                Ok((s, clones))
            });
        let (mut stream, (for_state, for_writer)) = match connected {
            Ok(c) => c,
            Err(e) => {
                debug!(%to, error = %e, "TCP relay connect failed");
                let mut st = self.lock_state();
                if st.is_current(generation) {
                    st.conn = None;
                    st.retry.failed(to, &self.config, Instant::now());
                }
                return;
            }
        };
        let (tx, rx) = sync_channel(self.config.queue_records);
        {
            let mut st = self.lock_state();
            let Some(conn) = st.conn.as_mut().filter(|c| c.generation == generation) else {
                // Closed or replaced while connecting.
                return;
            };
            if let Link::Connecting(queue) = &mut conn.link {
                for record in queue.drain(..) {
                    if tx.try_send(record).is_err() {
                        Counters::add(&self.counters.dropped, 1);
                    }
                }
            }
            conn.link = Link::Connected {
                tx,
                stream: for_state,
            };
        }
        Counters::add(&self.counters.connections_open, 1);
        debug!(%to, "TCP relay connected");
        if let Err(e) = spawn_writer("vnet-tcp-client-w".into(), rx, for_writer, self.clone()) {
            warn!(error = %e, "TCP relay writer thread");
            let _ = stream.shutdown(Shutdown::Both);
        }
        let mut got_any = false;
        let end = read_records(
            &mut stream,
            self.config.idle_timeout,
            &self.counters,
            |payload| {
                if !got_any {
                    // The server answers: a sound connection, forget past failures.
                    got_any = true;
                    self.lock_state().retry = Retry::default();
                }
                self.handler.datagram(to, payload);
            },
        );
        debug!(%to, reason = %end, "TCP relay disconnected");
        let _ = stream.shutdown(Shutdown::Both);
        {
            let mut st = self.lock_state();
            if st.is_current(generation) {
                st.conn = None;
                if !got_any {
                    st.retry.failed(to, &self.config, Instant::now());
                }
            }
        }
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        self.handler.disconnected(to);
    }
}

//! The manual: how torsion behaves at the edges. Nothing here is code; it is the contract.
//!
//! # Back-pressure
//!
//! A transport writes to the socket at once when it can and buffers what the socket does
//! not take. Within one protocol callback, only the first write goes straight to the socket;
//! the later ones are gathered and written together when the callback returns (or once
//! 64 KiB are gathered), so a protocol answering each of many small frames in one read costs
//! one system call per read, not one per frame, while an echo's single write per read is
//! never copied. A later vectored write ([`write_vectored`](crate::Transport::write_vectored))
//! of 16 KiB or more is not gathered by copying: it goes out at once, what the callback
//! gathered before it ahead of it in the same system call, and only what the socket does not
//! take is copied (smaller ones, such as a framed answer's header and payload, are gathered:
//! the copy costs less than a system call). Writes from outside callbacks (timers, handles,
//! producers) go out at once.
//! Watermark notices caused by gathered writes come after the callback, as for any write
//! made inside one. When the buffer rises above the **high watermark** (64 KiB by default,
//! [`ConnectionConfig`](crate::reactor::ConnectionConfig)), the protocol's
//! [`pause_producing`](crate::Protocol::pause_producing) runs; once it is back at or below the
//! **low watermark** (16 KiB) [`resume_producing`](crate::Protocol::resume_producing) runs. The default
//! implementations pause and resume *reading* from that connection — the right back-pressure
//! for anything that writes in response to what it reads, such as an echo server facing a
//! client that does not read. A registered [`Producer`](crate::Producer) is paused and resumed
//! the same way (push producers), or asked for more each time the buffer drains (pull
//! producers). A buffer that passes its **hard limit** (16 MiB) because its producer ignored
//! `pause_producing` aborts that one connection with
//! [`CloseReason::WriteBufferOverflow`](crate::CloseReason::WriteBufferOverflow).
//!
//! A protocol can change its own connection's watermarks at any time with
//! [`set_write_buffer_limits`](crate::Transport::set_write_buffer_limits) (asyncio's name).
//! [`Echo`](crate::protocols::wire::Echo) sets `(0, 0)`: it stops reading as soon as the
//! socket does not take a whole echo and resumes once everything went out, holding no more
//! than one read per slow client. When a flush lets a paused protocol resume, the transport
//! reads at once (the peer has usually sent more meanwhile) instead of waiting for the
//! poller.
//!
//! Reads are bounded too: one connection gets at most 16 reads per reactor turn, each of up
//! to 256 KiB over TCP and 64 KiB over Unix sockets (whose send buffer would not take the echo
//! of a larger read at once), and the read buffer is lent by the reactor for the duration of
//! the callback (an idle connection holds no read buffer; about 0.6 KiB per idle TCP
//! connection in all, BENCHMARKS.md).
//!
//! # Closing
//!
//! - [`lose_connection`](crate::Transport::lose_connection): no more data is delivered; the
//!   write buffer is flushed; FIN is sent; the transport keeps reading (and discarding) until
//!   the peer's FIN, so that unread data can never turn the close into a reset that destroys
//!   what was just sent; then the socket is closed and `connection_lost(Done)` runs. The whole
//!   sequence is bounded by the close timeout (30 s): a peer that neither reads nor closes gets
//!   a reset and the protocol sees [`CloseReason::CloseTimedOut`](crate::CloseReason).
//! - [`abort_connection`](crate::Transport::abort_connection): the buffer is dropped, the peer
//!   receives a reset (`SO_LINGER` 0), `connection_lost(Aborted)` runs.
//! - A reset from the peer (or a write into a reset connection) is
//!   [`CloseReason::Reset`](crate::CloseReason::Reset). Writes use `MSG_NOSIGNAL`, so SIGPIPE
//!   never kills the process, whatever its disposition.
//! - Writes after a close has started are ignored (logged at trace level), never a panic.
//! - `connection_lost` runs exactly once per connection, last.
//!
//! # Half-close
//!
//! By default the peer's FIN ends the connection: pending writes are flushed, then our FIN,
//! then `connection_lost(Done)`. A protocol returning `true` from
//! [`half_close`](crate::Protocol::half_close) instead receives
//! [`read_connection_lost`](crate::Protocol::read_connection_lost) and may keep writing (say,
//! a response to a request terminated by FIN) until it calls `lose_connection`.
//! [`lose_write_connection`](crate::Transport::lose_write_connection) is the other direction:
//! flush, FIN, [`write_connection_lost`](crate::Protocol::write_connection_lost), and reading
//! goes on until the peer's FIN closes the connection.
//!
//! # TLS
//!
//! TLS ([`transports::tls`](crate::transports::tls)) is a layer between the stream transport
//! and the protocol: everything above applies to the ciphertext stream underneath, and the
//! TLS transport the protocol writes through adds the following. The module's docs have the
//! details.
//!
//! - **Client attempts.** On a client from
//!   [`connect_tls`](crate::transports::tls::TlsReactorExt::connect_tls), the handshake is
//!   part of the connection attempt: the protocol is built once it completed, and a failed
//!   handshake reaches `client_connection_failed`. [`Connector::stop_connecting`](crate::Connector::stop_connecting)
//!   (or `disconnect`) during the handshake resets the connection at once and the factory
//!   hears `client_connection_failed` with `Aborted` on the next turn, as when stopped while
//!   TCP connects; it never hears `client_connection_lost`. After the handshake,
//!   `stop_connecting` does nothing and `disconnect` closes as `lose_connection` does.
//! - **Closing.** [`lose_connection`](crate::Transport::lose_connection) hands the stream the
//!   plaintext written so far, encrypted, then a `close_notify` alert; the stream flushes,
//!   sends FIN and waits for the peer's FIN, discarding what arrives. A peer that answers (its
//!   `close_notify`, then FIN) ends the connection at once with `Done`. A silent peer is
//!   waited for at most the **TLS close timeout**: 5 s by default
//!   ([`DEFAULT_TLS_CLOSE_TIMEOUT`](crate::transports::tls::DEFAULT_TLS_CLOSE_TIMEOUT),
//!   `close_timeout` on both TLS configuration builders), counted from the moment our
//!   `close_notify` has left the write buffer for the socket (noticed within a tenth of the
//!   timeout, and no sooner than 10 ms). Then the connection is
//!   **aborted** (reset) and the protocol still sees `Done`: the close was ours and
//!   everything we wrote reached the socket. `Done` does not prove that the peer read it all
//!   (only its `close_notify` does; a peer that loses the tail to the reset sees a reset or a
//!   truncation, never a clean end). If our data never leaves the buffer because the peer
//!   does not read, the stream's 30 s close timeout aborts the connection with
//!   `CloseTimedOut` instead.
//! - **Truncation.** EOF without the peer's `close_notify` is
//!   [`CloseReason::Truncated`](crate::CloseReason::Truncated), never `Done`, including after
//!   our own half-close; during the handshake it is
//!   [`TlsError::HandshakeEof`](crate::transports::tls::TlsError::HandshakeEof). After our
//!   `lose_connection` nothing is read any more, so the peer's bare FIN then ends the close
//!   cleanly.
//! - **Alerts and verification failures** (unknown CA, name mismatch, expired certificate,
//!   bytes that are not TLS…) end the connection with
//!   [`CloseReason::Tls`](crate::CloseReason::Tls); get the typed
//!   [`TlsError`](crate::transports::tls::TlsError) back with `TlsError::from_reason`. The
//!   alert is sent before FIN, and the TLS close timeout bounds the wait for the peer after
//!   it. A stalled handshake ends at the handshake deadline (10 s).
//! - **Abort.** [`abort_connection`](crate::Transport::abort_connection) resets at once, with
//!   no `close_notify`: `Aborted`.
//! - **Half-close.** [`lose_write_connection`](crate::Transport::lose_write_connection) sends
//!   `close_notify` then FIN; `write_connection_lost` runs once FIN is out, and reading goes
//!   on. The peer's `close_notify` is the TLS form of its FIN: a protocol opted in to
//!   half-close gets `read_connection_lost` and may keep writing until it calls
//!   `lose_connection`; without the opt-in the connection closes with `Done`. This relies on
//!   a peer that keeps sending after our `close_notify`, as TLS 1.3 peers such as rustls and
//!   torsion do; some TLS 1.2 stacks answer with their own `close_notify` and stop.
//! - **Back-pressure.** Writes made during one callback (or, from outside callbacks, one
//!   reactor turn) are encrypted together, so many small writes become few records. The
//!   watermarks apply to the ciphertext in the stream's buffer and pause and resume the
//!   protocol and its producer as on TCP; rustls's own outgoing buffer is bounded to the
//!   high watermark (64 KiB,
//!   [`DEFAULT_TLS_BUFFER_LIMIT`](crate::transports::tls::DEFAULT_TLS_BUFFER_LIMIT)).
//!
//! # Running out of descriptors
//!
//! When `accept` fails with `EMFILE`/`ENFILE` (or the kernel is out of buffers), the listening
//! port stops watching its socket and retries after a pause that doubles from 10 ms to 1 s
//! while the shortage lasts. Clients wait in the kernel's backlog meanwhile rather than being
//! accepted and dropped; the reactor does not spin; accepting resumes within one pause of
//! descriptors freeing up. One warning is logged per shortage.
//!
//! # Panics
//!
//! A panic in any callback of a protocol, producer or factory is caught, an error is logged,
//! and the reactor and every other connection go on. A panic in a protocol or producer
//! callback aborts the connection it happened on with
//! [`CloseReason::Panic`](crate::CloseReason::Panic) carrying the message (a panic in
//! `connection_lost` itself is only logged). A server factory that panics in `build_protocol`
//! refuses that connection: the accepted socket is closed before any protocol runs. A client
//! factory that panics in `build_protocol` fails the attempt: `client_connection_failed` gets
//! `Panic`; a panic in its other hooks is logged. A panicking timer callback is logged and
//! skipped.
//!
//! Each such panic is logged once, through `tracing`, its message followed by where it was
//! raised (`boom (at src/proto.rs:12:9)`, also the text of `CloseReason::Panic`). For that
//! the reactor installs a panic hook before it runs its first callback: silent for a panic
//! raised inside one of its callbacks (it logs the backtrace there when `RUST_BACKTRACE` asks
//! for one), it hands every other panic to the hook installed before it, the standard one
//! printing to stderr or the program's own. A panic a callback raises and catches itself is
//! not printed either. A hook the program installs later takes over from it, and then prints
//! caught panics as well.
//!
//! # Graceful shutdown
//!
//! [`Reactor::stop`](crate::Reactor::stop) runs the `Before` shutdown triggers while the loop
//! still serves I/O; work that must finish takes a
//! [`ShutdownHold`](crate::reactor::ShutdownHold), and the stop waits for every hold (or the
//! shutdown timeout) before the `During` and `After` triggers run and `run` returns.
//! `torsion serve` uses this to stop listening, close every connection gracefully and exit.
//!
//! What is still open when `run` returns stays open (`run` may be called again). Dropping the
//! last handle to the reactor ends it, as Twisted's reactor does on shutdown: each connection
//! closes at once (unwritten data is dropped) and hears `connection_lost` with
//! [`CloseReason::Aborted`](crate::CloseReason::Aborted), a client factory hears
//! `client_connection_lost` (or `client_connection_failed` for an attempt under way), each
//! port stops listening (its factory's stop hook runs) and each datagram protocol hears
//! `stop_protocol`. To close gracefully instead, close before `run` returns (the `Before`
//! phase with a hold, as `torsion serve` does).
//!
//! # Backends
//!
//! On Linux the reactor uses epoll directly (through rustix): one system call per wait.
//!
//! Stream connections (TCP and Unix, accepted or connected) are registered edge-triggered
//! (`EPOLLET`), as tokio and mio register their sockets. A level-triggered registration makes
//! the kernel poll every reported socket once more at the next wait, to learn whether it is
//! still ready: one socket poll per wake-up, paid on every round trip by an echo server with
//! many clients. Edge triggering hands the connection a duty instead: it reads until a read
//! comes back short or `WouldBlock`, and when it stops sooner to be fair to the others
//! (`ConnectionConfig::max_reads_per_turn` used up), the reactor itself reports it readable
//! again on the next turn, without asking the kernel. A short read is only trusted to mean
//! "empty" where the kernel does not end reads early: `EPOLLRDHUP` and `EPOLLPRI` say when
//! the end of stream or data past an urgent mark waits behind the data (the connection then
//! reads on to `WouldBlock`). The kernel also ends a Unix socket's read at a message that
//! carried descriptors; torsion has no API for passed descriptors, so its Unix stream sockets
//! refuse them where the kernel can (`SO_PASSRIGHTS` off, Linux 6.16 and later: the peer's
//! `sendmsg` fails with `EPERM`), and elsewhere read with `recvmsg`, going on past such a
//! message and closing the descriptors unread (`recvmsg` costs about 0.1 µs more per read
//! than `recv`, measured here, so it is used only where needed).
//! Pausing reading removes read interest and resuming restores it, which makes the kernel
//! look at the socket afresh. Listening sockets, datagram sockets and the signal pipe stay
//! level-triggered: they stop early by design (the adaptive accept batch, the datagram
//! budget) and wake rarely. BENCHMARKS.md has what the change measured.
//!
//! The portable backend on the `polling` crate is available everywhere through
//! [`Reactor::with_backend`](crate::Reactor::with_backend) (`torsion serve --reactor
//! polling`) and is the default on other platforms. It registers sources in `polling`'s
//! level-triggered mode, not one-shot: the contract is level semantics, and one-shot would
//! cost an `epoll_ctl` per event to re-arm. Around every wait `polling` re-arms its own timer
//! and notifier, four system calls more than epoll's one, and that is why it is not the
//! default on Linux: against the epoll backend on the machine of BENCHMARKS.md it makes 0.84x
//! the round trips of a one-client Unix-socket echo, 0.96x the MiB/s of one-connection TCP
//! bulk, and spends 7% more CPU per round trip at one TCP client and 4% more at 1,000.
//! Asking the poller's descriptor with `poll(2)` before each busy-poll wait was tried and made
//! it slower. Both backends sit behind the same internal trait, whose contract is written at
//! the top of `reactor/src/backend/mod.rs`.
//!
//! # Busy polling
//!
//! Before it blocks, the loop keeps polling its backend without blocking for a short window
//! (at most 50 µs by default, [`Reactor::set_busy_poll`](crate::Reactor::set_busy_poll);
//! `torsion serve --busy-poll-us`). Going to sleep in the kernel and being woken costs more
//! than echoing a small message, on virtual machines above all, where each wake-up crosses
//! the hypervisor: on the 2-core VM of BENCHMARKS.md an echo server answering one client at a
//! time makes about 2.5 times as many round trips over TCP (7 times over a Unix socket) with
//! busy polling as without, and spends *less* CPU per round trip.
//!
//! The window adapts like the Linux `haltpoll` idle governor: a wait that blocked but ended
//! within the maximum doubles it (from a quarter of the maximum), a wait longer than the
//! maximum halves it, and under a sixteenth of the maximum it closes. So a reactor whose
//! events come more than 50 µs apart does not spin at all, and an idle reactor spins for at
//! most about 100 µs after its last event. Timers are not delayed (the spin never runs past
//! the next timer), and calls from other threads end the spin. The cost: a server busy with
//! one request every few tens of microseconds shows a whole core in use. Turn it off
//! (`Duration::ZERO`) when CPU time matters more than latency, or when more reactor threads
//! than cores share a machine.

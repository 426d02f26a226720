//! A TCP relay that delays every chunk by a fixed time each way: the benches' stand-in for
//! a database across a network (loopback answers in tens of microseconds, a data centre in
//! hundreds), so that what a round trip costs shows in the ratios.
//!
//! Each direction of each connection has a reader thread that stamps chunks as it reads
//! them and a writer thread that sends each one once its time has come: chunks keep their
//! order and a pipelined stream is delayed once, not once per chunk queued before it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use super::Result;

/// Starts a relay to `target`'s server that delays each chunk by `one_way` in each
/// direction, and returns `target`'s options pointed at the relay.
pub fn relay(target: &PgConnectOptions, one_way: Duration) -> Result<PgConnectOptions> {
    let host = target.get_host();
    if host.starts_with('/') {
        return Err(format!("--latency-us needs a TCP server, not the socket {host}").into());
    }
    let upstream = format!("{host}:{}", target.get_port());
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            match TcpStream::connect(&upstream) {
                Ok(server) => {
                    if let Err(e) = pipe_both_ways(client, server, one_way) {
                        eprintln!("latency relay: {e}");
                    }
                }
                Err(e) => eprintln!("latency relay: cannot reach {upstream}: {e}"),
            }
        }
    });
    eprintln!(
        "latency relay on 127.0.0.1:{port}: +{} us each way",
        one_way.as_micros()
    );
    Ok(target.clone().host("127.0.0.1").port(port))
}

fn pipe_both_ways(client: TcpStream, server: TcpStream, one_way: Duration) -> Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    pipe(client.try_clone()?, server.try_clone()?, one_way);
    pipe(server, client, one_way);
    Ok(())
}

/// Forwards `from` to `to`, each chunk `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping `chunks` tells the writer to finish and close.
    });
    thread::spawn(move || {
        for (at, chunk) in due {
            thread::sleep(at.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

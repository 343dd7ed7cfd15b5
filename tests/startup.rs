//! The built `voicegate serve` binary at start-up: its port is bound before the ~2 s warm-up
//! call, so a request that comes early waits in the listen backlog and is answered once the
//! server serves, instead of being refused. No timing assertion beyond "the connection was
//! accepted before the `listening on` line": the warm-up call takes seconds, binding a port
//! microseconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

#[test]
fn an_early_request_waits_for_the_warm_up_instead_of_being_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_voicegate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn voicegate");
    let listening = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    {
        let stdout = child.stdout.take().expect("stdout");
        let listening = listening.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("listening on http://") {
                    listening.store(true, Ordering::SeqCst);
                    let _ = tx.send(line);
                }
            }
        });
    }

    // Connect as soon as the port takes connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "never accepted: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    let early = !listening.load(Ordering::SeqCst);
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let read = conn.read_to_string(&mut response);
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();

    read.expect("the early request is answered");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let line = line.expect("a `listening on` line");
    assert!(line.ends_with(&format!(":{port}")), "{line}");
    assert!(
        early,
        "the connection was only accepted after `listening on`: the port is bound after the \
         warm-up again"
    );
}

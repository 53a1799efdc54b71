//! Exclusive session leases: one holder at a time, its pid reported, freed by close, by
//! disconnect, and by the death of the holding process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use session_vault_client::Connection;
use session_vault_proto::message::{ErrorCode, Request, Response, SessionListing};

use crate::util::child::{As, ChildClient};
use crate::util::*;

fn open_req(name: &str, exclusive: bool) -> Request {
    Request::OpenSession {
        name: name.into(),
        exclusive,
        create_if_missing: false,
    }
}

async fn listing(c: &Connection, name: &str) -> SessionListing {
    match c.call(Request::ListSessions).await {
        Ok(Response::Sessions(list)) => list
            .into_iter()
            .find(|s| s.summary.name == name)
            .unwrap_or_else(|| panic!("{name} not listed")),
        other => panic!("list: {other:?}"),
    }
}

/// Asserts the session is busy, held by `pid`, for an exclusive open, a delete and a list.
async fn assert_held_by(c: &Connection, name: &str, pid: u32) {
    let r = c.call(open_req(name, true)).await;
    assert_eq!(
        err_code(r),
        ErrorCode::SessionBusy {
            holder_pid: Some(pid)
        }
    );
    assert_eq!(listing(c, name).await.lease_holder_pid, Some(pid));
    let r = c
        .call(Request::DeleteSession {
            name: name.into(),
            force: false,
        })
        .await;
    assert_eq!(
        err_code(r),
        ErrorCode::SessionBusy {
            holder_pid: Some(pid)
        },
        "delete of a leased session"
    );
}

#[tokio::test]
async fn a_lease_dies_with_its_process() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "bot", false).await;
    c.call(Request::CloseSession { handle: h }).await.unwrap();

    let mut holder = ChildClient::spawn(&env, As::Me, &[open_req("bot", true)], true);
    assert!(
        matches!(holder.response(), Response::Opened { .. }),
        "child open"
    );
    holder.wait_ready();
    assert_held_by(&c, "bot", holder.pid()).await;

    holder.kill();
    let (_, took) = open_when_free(&c, "bot", Duration::from_secs(10)).await;
    println!("lease freed {took:?} after SIGKILL of its holder");
    assert_eq!(
        listing(&c, "bot").await.lease_holder_pid,
        Some(std::process::id())
    );
    env.assert_serving().await;
}

#[tokio::test]
async fn a_lease_is_freed_by_close_and_by_disconnect_and_reentrant_on_its_connection() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let a = open_session(&c, "bot", true).await;
    // The same connection may open it again (a second handle), others may not.
    let a2 = opened(c.call(open_req("bot", true)).await);
    let other = env.connect().await;
    let busy = ErrorCode::SessionBusy {
        holder_pid: Some(std::process::id()),
    };
    assert_eq!(err_code(other.call(open_req("bot", true)).await), busy);
    // A shared (non-exclusive) open does not take the lease and is not refused by it.
    let shared = opened(other.call(open_req("bot", false)).await);
    let r = other.call(Request::GetHomeDc { handle: shared }).await;
    assert!(matches!(r, Ok(Response::HomeDc(2))), "{r:?}");

    // Closing one of two handles keeps the lease; closing both frees it.
    c.call(Request::CloseSession { handle: a }).await.unwrap();
    assert_eq!(err_code(other.call(open_req("bot", true)).await), busy);
    c.call(Request::CloseSession { handle: a2 }).await.unwrap();
    assert_eq!(listing(&c, "bot").await.lease_holder_pid, None);
    let b = opened(other.call(open_req("bot", true)).await);
    // The lease holder may replace the whole session; a shared handle may not.
    let r = other
        .call(Request::Import {
            handle: b,
            data: Default::default(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let s = opened(c.call(open_req("bot", false)).await);
    let r = c
        .call(Request::Import {
            handle: s,
            data: Default::default(),
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::InvalidRequest);

    // Dropping the connection frees its lease.
    drop(other);
    let (_, took) = open_when_free(&c, "bot", Duration::from_secs(10)).await;
    println!("lease freed {took:?} after its connection was dropped");
}

const PY_HOLDER: &str = r#"
import msgpack, socket, struct, sys

def send(s, obj):
    data = msgpack.packb(obj, use_bin_type=True)
    s.sendall(struct.pack(">I", len(data)) + data)

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise SystemExit("daemon closed the connection")
        buf += chunk
    return buf

def recv(s, want_id):
    while True:
        (n,) = struct.unpack(">I", recv_exact(s, 4))
        frame = msgpack.unpackb(recv_exact(s, n), raw=False)
        if frame["id"] == want_id:
            return frame["response"]

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
send(s, {"id": 1, "request": {"hello": {"protocol_major": 1, "protocol_minor": 0, "client": "python"}}})
welcome = recv(s, 1)
assert "welcome" in welcome, welcome
send(s, {"id": 2, "request": {"open_session": {"name": sys.argv[2], "exclusive": True, "create_if_missing": False}}})
opened = recv(s, 2)
assert "opened" in opened, opened
print("ready", opened["opened"]["handle"], flush=True)
sys.stdin.read()
"#;

/// A Python client written from the spec holds a lease; SIGKILL frees it. Skipped (with a
/// note) where Python's `msgpack` is not installed: the test above covers the same with a
/// Rust child.
#[tokio::test]
async fn a_python_client_holds_a_lease_until_killed() {
    let has_msgpack = Command::new("python3")
        .args(["-c", "import msgpack"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_msgpack {
        eprintln!("skipped: python3 with msgpack is not available");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "pybot", false).await;
    c.call(Request::CloseSession { handle: h }).await.unwrap();

    let mut py = Command::new("python3")
        .args(["-c", PY_HOLDER])
        .arg(env.socket())
        .arg("pybot")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut line = String::new();
    BufReader::new(py.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("python client output");
    assert!(line.starts_with("ready "), "python client said {line:?}");
    assert_held_by(&c, "pybot", py.id()).await;

    py.kill().unwrap();
    py.wait().unwrap();
    let (_, took) = open_when_free(&c, "pybot", Duration::from_secs(10)).await;
    println!("lease freed {took:?} after SIGKILL of the python holder");
}

#[tokio::test]
async fn a_leased_session_cannot_be_replaced_by_an_admin_import() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let holder = env.connect().await;
    let h = open_session(&holder, "bot", true).await;
    let r = c
        .call(Request::ImportSession {
            name: "bot".into(),
            data: Default::default(),
            replace: true,
            owner_uid: None,
            force: false,
        })
        .await;
    assert_eq!(
        err_code(r),
        ErrorCode::SessionBusy {
            holder_pid: Some(std::process::id())
        }
    );
    // The holder's handle still works; once it closes, the import goes through.
    let r = holder.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(2))), "{r:?}");
    holder
        .call(Request::CloseSession { handle: h })
        .await
        .unwrap();
    let r = c
        .call(Request::ImportSession {
            name: "bot".into(),
            data: session_vault_proto::model::SessionData {
                home_dc: 1,
                ..Default::default()
            },
            replace: true,
            owner_uid: None,
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    assert_eq!(listing(&c, "bot").await.summary.home_dc, 1);
}

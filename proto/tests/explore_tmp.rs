use session_vault_proto::codec::*;
use session_vault_proto::message::*;

#[test]
fn deep() {
    for depth in [100usize, 500, 1000, 1022] {
        let mut p = vec![0x83, 0xa2, b'i', b'd', 0x01, 0xa7];
        p.extend_from_slice(b"request");
        p.push(0xa6); p.extend_from_slice(b"status");
        p.push(0xa1); p.push(b'x');
        for _ in 0..depth { p.push(0x91); }
        p.push(0xc0);
        let h = std::thread::Builder::new().stack_size(2 << 20).spawn(move || {
            let r = decode_payload::<ClientFrame>(&p);
            format!("{r:?}")
        }).unwrap();
        println!("depth {depth}: {:?}", h.join().map(|s| s.chars().take(100).collect::<String>()));
    }
}

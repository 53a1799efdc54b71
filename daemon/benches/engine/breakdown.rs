//! The breakdown group: where an encrypted operation's time goes (`Vault::status` on the
//! inline path, HMAC blind index, AEAD seal/open, OS RNG, the engine without the `Vault`
//! handle), each piece measured alone.

use super::*;

/// Where the time goes: the pieces of an encrypted operation, measured alone.
pub fn bench_breakdown(c: &mut Criterion, f: Fixture, dir: &Path, sizes: Sizes) {
    let Fixture {
        rt, vault, lookup, ..
    } = f;
    let mut g = group(c, sizes, "breakdown", Speed::Fast, 1);
    bench(&mut g, "breakdown", "channel_hop_status", |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(vault.status().await.unwrap());
            }
            start.elapsed()
        })
    });
    bench(
        &mut g,
        "breakdown",
        "channel_hop_status_from_task",
        |iters| {
            let v = vault.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(v.status().await.unwrap());
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        },
    );
    let mut vault_id = [0u8; 16];
    fill_random(&mut vault_id).unwrap();
    let keys = Keys::derive(vault_id, SecretKey::random().unwrap());
    let key_bytes = [1u8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40];
    bench(&mut g, "breakdown", "hmac_blind_index", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(keys.blind("peers", 7, "key", black_box(&key_bytes)));
        }
        start.elapsed()
    });
    bench(&mut g, "breakdown", "os_rng_24_bytes", |iters| {
        let mut nonce = [0u8; 24];
        let start = Instant::now();
        for _ in 0..iters {
            fill_random(black_box(&mut nonce)).unwrap();
        }
        start.elapsed()
    });
    // A peer record's plaintext as the engine writes it (positional MessagePack).
    let record = rmp_serde::to_vec(&make_peer(123, 4)).unwrap();
    let row = keys.blind("peers", 7, "key", &key_bytes);
    let place = RecordPlace {
        table: "peers",
        session_id: 7,
        row: &row,
    };
    bench(&mut g, "breakdown", "aead_seal_peer", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(keys.seal(&place, 1, black_box(&record), PAD_SMALL).unwrap());
        }
        start.elapsed()
    });
    let sealed = keys.seal(&place, 1, &record, PAD_SMALL).unwrap();
    bench(&mut g, "breakdown", "aead_open_peer", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(keys.open(&place, black_box(&sealed)).unwrap());
        }
        start.elapsed()
    });
    bench(&mut g, "breakdown", "msgpack_peer_roundtrip", |iters| {
        let p = make_peer(123, 4);
        let start = Instant::now();
        for _ in 0..iters {
            let bytes = rmp_serde::to_vec(black_box(&p)).unwrap();
            black_box(rmp_serde::from_slice::<Peer>(&bytes).unwrap());
        }
        start.elapsed()
    });
    g.finish();

    // The engine called directly on the same file, without the storage thread.
    rt.block_on(vault.close()).unwrap();
    // The storage thread lets go of the file (exclusive lock) just after `close` answers.
    let mut tries = 0;
    let store = loop {
        match SqliteStore::open(&dir.join("vault.db")) {
            Ok(s) => break s,
            Err(e) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
                let _ = e;
            }
            Err(e) => panic!("cannot reopen the vault: {e}"),
        }
    };
    let mut engine = Engine::new(store).unwrap();
    let (vid, slots) = engine.keyslots().unwrap();
    let dek = slots[0].open(&vid, PASS).unwrap();
    engine.install_keys(dek).unwrap();
    assert_eq!(engine.open_session("lookup").unwrap(), lookup);
    let order = lookup_order(sizes.lookup_peers, 1 << 16);
    let mut g = group(c, sizes, "engine_direct", Speed::Fast, 1);
    let mut pos = 0usize;
    bench(&mut g, "engine_direct", "peer_lookup_id", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            pos = (pos + 1) % order.len();
            let p = engine.peer(lookup, peer_key(order[pos])).unwrap();
            assert!(black_box(p).is_some());
        }
        start.elapsed()
    });
    let names: Vec<String> = order
        .iter()
        .map(|&i| format!("@user_{}", ID_BASE + i))
        .collect();
    bench(&mut g, "engine_direct", "peer_lookup_username", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            pos = (pos + 1) % names.len();
            let p = engine.peer_by_username(lookup, &names[pos]).unwrap();
            assert!(black_box(p).is_some());
        }
        start.elapsed()
    });
    g.finish();

    let name = "engine_direct_upsert_100";
    let mut g = group(c, sizes, name, Speed::Fast, 100);
    let upsert = engine.open_session("upsert").unwrap();
    let mut generation = 1_000_000u64;
    let mut next = 0i64;
    let mut in_txn_since: Option<Instant> = None;
    bench(&mut g, name, "cache_peers", |iters| {
        let work: Vec<Vec<Peer>> = (0..iters)
            .map(|_| {
                generation += 1;
                let v = (0..100)
                    .map(|k| make_peer((next + k) % sizes.rotation, generation))
                    .collect();
                next = (next + 100) % sizes.rotation;
                v
            })
            .collect();
        let start = Instant::now();
        for peers in work {
            // What the storage thread does around a job, minus the channel.
            if in_txn_since.is_none() {
                engine.store().begin().unwrap();
                in_txn_since = Some(Instant::now());
            }
            engine.store().savepoint().unwrap();
            engine.cache_peers(upsert, &peers).unwrap();
            engine.store().release().unwrap();
            if in_txn_since.is_some_and(|s| s.elapsed() >= FLUSH) {
                engine.store().commit().unwrap();
                in_txn_since = None;
            }
        }
        start.elapsed()
    });
    g.finish();
    if in_txn_since.is_some() {
        engine.store().commit().unwrap();
    }
}

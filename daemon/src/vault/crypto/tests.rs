//! Unit tests of the vault crypto: record layout and binding, blind indexes, keyslots.

use chacha20poly1305::aead::{Aead, Payload};
use hmac::{Hmac, Mac};

use super::*;

fn keys() -> Box<Keys> {
    Keys::derive([7u8; VAULT_ID_LEN], SecretKey::random().unwrap())
}

#[test]
fn record_round_trip_and_binding() {
    let k = keys();
    let place = RecordPlace {
        table: "peers",
        session_id: 1,
        row: b"row-a",
    };
    let sealed = k.seal(&place, 7, b"secret", PAD_SMALL).unwrap();
    // version, generation, nonce, one 32-byte padded block, tag.
    assert_eq!(sealed.len(), 1 + 8 + NONCE_LEN + PAD_SMALL + TAG_LEN);
    assert_eq!(sealed[0], RECORD_FORMAT);
    assert_eq!(sealed[1..9], 7u64.to_be_bytes());
    let opened = k.open(&place, &sealed).unwrap();
    assert_eq!((opened.generation, &opened.plain[..]), (7, &b"secret"[..]));
    // The layout is `2 ‖ gen ‖ nonce ‖ ciphertext ‖ tag`, as XChaCha20-Poly1305's combined
    // form under the record key, with the generation in the AAD and ISO 7816-4 padding.
    let (nonce, ct) = sealed[9..].split_at(NONCE_LEN);
    let mut aad = Vec::new();
    for part in [
        &[7u8; VAULT_ID_LEN][..],
        b"peers",
        &1i64.to_be_bytes(),
        b"row-a",
        &[2],
        &7u64.to_be_bytes(),
    ] {
        push_field(&mut aad, part);
    }
    let mut padded = b"secret\x80".to_vec();
    padded.resize(PAD_SMALL, 0);
    let combined = XChaCha20Poly1305::new(k.record_key().expose().into())
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: &padded,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(ct, &combined[..]);
    for other in [
        RecordPlace {
            row: b"row-b",
            ..place
        },
        RecordPlace {
            session_id: 2,
            ..place
        },
        RecordPlace {
            table: "dc_options",
            ..place
        },
    ] {
        assert!(matches!(
            k.open(&other, &sealed),
            Err(EngineError::Corrupt { .. })
        ));
    }
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(
            matches!(k.open(&place, &bad), Err(EngineError::Corrupt { .. })),
            "byte {i}"
        );
    }
}

#[test]
fn version_1_records_still_open_as_generation_0() {
    let k = keys();
    let place = RecordPlace {
        table: "peers",
        session_id: 1,
        row: b"row-a",
    };
    // What builds before record format 2 wrote: `1 ‖ nonce ‖ ct ‖ tag`, no generation, no
    // padding, the version alone at the end of the AAD.
    let mut aad = Vec::new();
    for part in [
        &[7u8; VAULT_ID_LEN][..],
        b"peers",
        &1i64.to_be_bytes(),
        b"row-a",
        &[1],
    ] {
        push_field(&mut aad, part);
    }
    let nonce = [5u8; NONCE_LEN];
    let ct = XChaCha20Poly1305::new(k.record_key().expose().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: b"old\0\0",
                aad: &aad,
            },
        )
        .unwrap();
    let mut sealed = vec![1u8];
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ct);
    let opened = k.open(&place, &sealed).unwrap();
    assert_eq!((opened.generation, &opened.plain[..]), (0, &b"old\0\0"[..]));
}

#[test]
fn padding_hides_the_length_within_a_class() {
    let k = keys();
    let place = RecordPlace {
        table: "dc_options",
        session_id: 1,
        row: b"k",
    };
    let short = k.seal(&place, 1, &[1u8; 20], PAD_FIXED).unwrap();
    let long = k.seal(&place, 1, &[1u8; 300], PAD_FIXED).unwrap();
    assert_eq!(short.len(), long.len());
    // A plaintext that fills a class exactly still gets its 0x80 marker, in the next class.
    let full = k.seal(&place, 1, &[0u8; PAD_SMALL], PAD_SMALL).unwrap();
    assert_eq!(full.len(), 1 + 8 + NONCE_LEN + 2 * PAD_SMALL + TAG_LEN);
    assert_eq!(&k.open(&place, &full).unwrap().plain[..], &[0u8; PAD_SMALL]);
}

#[test]
fn blind_is_the_hmac_of_the_length_prefixed_fields() {
    let k = keys();
    let mut buf = Vec::new();
    for part in [&b"peers"[..], &7i64.to_be_bytes(), b"key", b"\x01value"] {
        push_field(&mut buf, part);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k.index_key().expose()).unwrap();
    mac.update(&buf);
    let want = mac.finalize().into_bytes();
    assert_eq!(
        k.blind("peers", 7, "key", b"\x01value")[..],
        want[..BLIND_LEN]
    );
    // Field boundaries count: moving a byte from one field to the next changes the index.
    assert_ne!(
        k.blind("peers", 7, "key", b"v"),
        k.blind("peers", 7, "ke", b"yv")
    );
}

#[test]
fn a_blinder_gives_each_value_the_blind_index_of_its_own_call() {
    let k = keys();
    // Values of several lengths, one past a SHA-256 block with the fields before it, each
    // blinded after the others: the shared midstate must not carry one value into the next.
    let values: [&[u8]; 4] = [b"\x01value", b"", &[7u8; 80], b"\x01value"];
    let batch: Vec<_> = k.with_blinder("peers", 7, "key", |b| {
        values.iter().map(|v| b.blind(v)).collect()
    });
    for (v, got) in values.iter().zip(&batch) {
        assert_eq!(*got, k.blind("peers", 7, "key", v));
    }
    assert_eq!(batch[0], batch[3]);
    assert_ne!(batch[0], batch[1]);
    // The table, session and field are the blinder's, as in a single call.
    assert_ne!(
        k.with_blinder("peers", 8, "key", |b| b.blind(values[0])),
        batch[0]
    );
    let shown = k.with_blinder("peers", 7, "key", |b| format!("{b:?}"));
    assert_eq!(shown, "Blinder(<keyed>)");
}

#[test]
fn keyslot_round_trip_wrong_passphrase_and_edits() {
    let vid = [3u8; VAULT_ID_LEN];
    let dek = SecretKey::random().unwrap();
    let kdf = KdfParams::insecure_fast_for_tests();
    let ks = Keyslot::seal(&vid, 0, "passphrase", kdf, b"hunter2", &dek).unwrap();
    assert_eq!(ks.open(&vid, b"hunter2").unwrap().expose(), dek.expose());
    assert!(matches!(
        ks.open(&vid, b"hunter3"),
        Err(EngineError::BadPassphrase)
    ));
    let mut edited = ks.clone();
    edited.kdf.t_cost += 1;
    assert!(matches!(
        edited.open(&vid, b"hunter2"),
        Err(EngineError::Corrupt { .. })
    ));
    // An attacker who also fixes the checksum still cannot make the slot decode.
    edited.check = edited.checksum(&vid);
    assert!(edited.open(&vid, b"hunter2").is_err());
    assert!(matches!(
        ks.open(&[4u8; VAULT_ID_LEN], b"hunter2"),
        Err(EngineError::Corrupt { .. })
    ));
}

#[test]
fn default_kdf_is_strong() {
    let d = KdfParams::default();
    assert!(d.m_cost_kib >= 64 * 1024 && d.t_cost >= 3 && d.p_cost >= 1);
}

#[test]
fn debug_never_shows_key_bytes() {
    let k = SecretKey::random().unwrap();
    let shown = format!("{k:?} {:?}", keys());
    assert_eq!(shown, "SecretKey(<redacted>) Keys(<redacted>)");
}

#[test]
fn passphrase_floor_counts_characters() {
    assert!(check_new_passphrase(b"1234567").is_err());
    assert!(check_new_passphrase(b"12345678").is_ok());
    // Eight characters, more than eight bytes.
    assert!(check_new_passphrase("ééééééé".as_bytes()).is_err());
    assert!(check_new_passphrase("éééééééé".as_bytes()).is_ok());
}

#[test]
fn kdf_floor() {
    assert!(KdfParams::default().meets_floor());
    assert!(KdfParams::FLOOR.meets_floor());
    assert!(!KdfParams::insecure_fast_for_tests().meets_floor());
    assert!(
        !KdfParams {
            t_cost: 1,
            ..KdfParams::default()
        }
        .meets_floor()
    );
}

#[test]
fn pooled_nonces_never_repeat_across_refills_and_threads() {
    // Four pools' worth on each of two threads: every nonce distinct, none all zero.
    let take = || {
        (0..4 * NONCE_POOL_BYTES / NONCE_LEN)
            .map(|_| fresh_nonce().unwrap())
            .collect::<Vec<_>>()
    };
    let other = std::thread::spawn(take);
    let mut all = take();
    all.extend(other.join().unwrap());
    let n = all.len();
    assert!(all.iter().all(|x| x != &[0; NONCE_LEN]));
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a nonce was handed out twice");
    // And records sealed back to back carry distinct nonces.
    let k = keys();
    let place = RecordPlace {
        table: "peers",
        session_id: 1,
        row: b"row-a",
    };
    let a = k.seal(&place, 1, b"same", PAD_SMALL).unwrap();
    let b = k.seal(&place, 1, b"same", PAD_SMALL).unwrap();
    assert_ne!(a, b);
}

#[test]
fn scrubbed_once_defers_inner_scrubs_and_ends_on_unwind() {
    let deferred = || SCRUB_DEFERRED.with(std::cell::Cell::get);
    assert!(!deferred());
    scrubbed_once(|| {
        assert!(deferred(), "inner calls leave their scrub to the end");
        scrubbed_once(|| assert!(deferred()));
        assert!(deferred(), "a nested batch does not end the outer one");
        // Crypto inside still works.
        let k = keys();
        let place = RecordPlace {
            table: "peers",
            session_id: 1,
            row: b"row-a",
        };
        let sealed = k.seal(&place, 1, b"x", PAD_SMALL).unwrap();
        assert_eq!(&k.open(&place, &sealed).unwrap().plain[..], b"x");
    });
    assert!(!deferred(), "per-call scrubs again after the batch");
    let r = std::panic::catch_unwind(|| scrubbed_once(|| panic!("boom")));
    assert!(r.is_err());
    assert!(!deferred(), "and after a batch that unwound");
}

//! Frames a client sends, as the daemon reads them: `read_frame` (length checked against the
//! limit before any allocation) and `decode_payload::<ClientFrame>` (strict, depth-bounded).
//! Arbitrary bytes must give frames or errors: never a panic, a hang or a huge allocation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_vault_proto::message::ClientFrame;

fuzz_target!(|data: &[u8]| {
    session_vault_fuzz::frames::<ClientFrame>(data);
});

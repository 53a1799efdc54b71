//! Frames the daemon sends, as the client reads them: `read_frame` and
//! `decode_payload::<ServerFrame>` (request handling itself is too stateful to fuzz here; the
//! client's decoder is what a hostile listener at the socket path would attack).

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_vault_proto::message::ServerFrame;

fuzz_target!(|data: &[u8]| {
    session_vault_fuzz::frames::<ServerFrame>(data);
});

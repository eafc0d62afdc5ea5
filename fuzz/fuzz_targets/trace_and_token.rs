//! Trace context and tokens, the two things clients hand us to be parsed
//! before anything else happens: never a panic, and only strictly valid
//! traceparents produce a parent.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wsgate::auth::Verifier;
use wsgate::telemetry::propagation;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::new(Some(b"fuzz-secret"), None)
            .expect("a secret")
            .expect("tokens on")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The same input as a traceparent (with itself as tracestate): a parent is
    // extracted exactly when the header is strictly valid (surrounding
    // whitespace is tolerated, as in HTTP headers).
    let valid = propagation::is_valid_traceparent(text.trim());
    let cx = propagation::extract_frame(Some(text), Some(text));
    let extracted = propagation::span_context(&cx).is_valid();
    assert_eq!(extracted, valid, "traceparent {text:?}");
    // And as a token: refused cleanly (it is not signed with the secret).
    let _ = verifier().verify(text);
});

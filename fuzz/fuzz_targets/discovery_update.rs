#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| grpc_balancer_fuzz::discovery_update(data));

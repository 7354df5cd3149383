fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::storage_object(data));
}

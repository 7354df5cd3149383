fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::field_selector(data));
}

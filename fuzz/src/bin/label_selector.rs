fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::label_selector(data));
}

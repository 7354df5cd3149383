fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::apply_patch(data));
}

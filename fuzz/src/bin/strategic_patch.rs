fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::strategic_patch(data));
}

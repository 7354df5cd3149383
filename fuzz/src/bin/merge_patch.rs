fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::merge_patch(data));
}

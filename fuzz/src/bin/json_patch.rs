fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::json_patch(data));
}

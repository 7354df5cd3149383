fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::json_object(data));
}

fn main() {
    afl::fuzz!(|data: &[u8]| atrest_fuzz::kms_object(data));
}

//! The conformance suite, run against the embedded store and against a real etcd.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod common;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _backing) = crate::common::sqlite_store().await;
                    crate::common::suite::$name(store).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _backing) = crate::common::etcd_store().await;
                    crate::common::suite::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    create_get_and_already_exists,
    update_compare_and_swap,
    delete_compare_and_swap,
    revisions_are_global_and_increasing,
    list_prefix_boundaries,
    paginated_list_reads_one_revision,
    list_at_revision_and_revision_errors,
    watch_delivers_puts_and_deletes_with_previous,
    watch_from_compacted_revision_fails,
    leases_expire_and_revoke,
    cas_race_counts_exactly,
    history_lists_retained_versions,
    errors_never_show_values,
    update_many_applies_each_update_on_its_own,
    unlimited_list_of_many_megabytes,
    keys_only_lists_carry_revisions_without_values,
    history_pages_hold_every_retained_version_and_defragment_reports,
);

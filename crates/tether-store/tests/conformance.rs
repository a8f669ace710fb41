//! The stream store's conformance suite: one set of cases, written once against the
//! [`StreamStore`] trait, that every backend must pass.
//!
//! Each case is a function generic over a [`Harness`], in one of the modules under
//! `conformance/` by subject; `conformance_suite!` turns every case into its own
//! `#[tokio::test]` for one backend. Adding a backend (PostgreSQL) means writing its harness in
//! `common/` and one more module at the bottom of this file that instantiates the suite.
//!
//! The cases follow the Durable Streams protocol (sections 4.2, 5.1-5.4, 5.2.1, 9.1) and the
//! storage guarantees G1-G4 of DESIGN.md. Waits on a tail watch are bounded by [`PATIENCE`]
//! when the wake must come and by [`QUIET`] when it must not; nothing sleeps hoping a race is
//! over. The only real-time sleeps wait for a TTL deadline itself.

mod common;

// Each subject in its own file; `#[path]` keeps them out of Cargo's test-target discovery.
#[path = "conformance/append_read.rs"]
mod append_read;
#[path = "conformance/closure.rs"]
mod closure;
#[path = "conformance/concurrency.rs"]
mod concurrency;
#[path = "conformance/create.rs"]
mod create;
#[path = "conformance/durability.rs"]
mod durability;
#[path = "conformance/expiry.rs"]
mod expiry;
#[path = "conformance/forks.rs"]
mod forks;
#[path = "conformance/live.rs"]
mod live;
#[path = "conformance/owners.rs"]
mod owners;
#[path = "conformance/producers.rs"]
mod producers;

use append_read::*;
use closure::*;
use concurrency::*;
use create::*;
use durability::*;
use expiry::*;
use forks::*;
use live::*;
use owners::*;
use producers::*;

/// Instantiates every case for one backend. `$harness` builds a fresh, empty harness, or
/// `None` when the backend is not available here (the case then says so and passes).
macro_rules! conformance_suite {
    ($harness:expr) => {
        conformance_suite!(@cases $harness;
            // create
            new_stream_is_empty_at_offset_zero,
            missing_stream_is_not_found_by_every_operation,
            identical_create_returns_the_existing_stream_unchanged,
            create_with_a_different_content_type_conflicts,
            create_with_a_different_ttl_or_expiry_conflicts,
            create_with_a_different_closed_flag_conflicts,
            content_types_match_without_case_or_parameters,
            initial_body_becomes_the_first_content,
            invalid_initial_json_creates_nothing,
            // append and read
            append_offsets_strictly_increase_by_the_appended_size,
            binary_data_comes_back_byte_for_byte,
            json_arrays_are_flattened_exactly_one_level,
            empty_json_array_append_is_rejected,
            invalid_json_append_is_rejected_and_stores_nothing,
            append_with_another_content_type_is_rejected,
            empty_body_without_close_is_rejected,
            reads_from_a_middle_offset_return_only_what_follows,
            reads_from_inside_the_latest_append_return_the_rest_of_it,
            read_from_now_returns_nothing_at_the_tail,
            reads_past_the_tail_are_rejected,
            small_reads_following_next_return_the_whole_log_exactly_once,
            logs_larger_than_any_cache_read_back_completely,
            // durability
            acknowledged_data_survives_reopen_with_the_same_offsets,
            closure_and_its_closer_survive_reopen,
            producer_state_survives_reopen,
            stream_seq_survives_reopen,
            forks_and_soft_deletes_survive_reopen,
            deleted_streams_stay_deleted_after_reopen,
            reopened_logs_read_back_in_windows_while_the_tail_moves,
            // concurrency
            concurrent_appends_are_each_stored_once_in_each_writers_order,
            concurrent_retries_of_producer_batches_are_stored_once,
            rejected_appends_in_a_busy_batch_leave_the_others_intact,
            concurrent_identical_creates_make_one_stream,
            // closure
            append_to_a_closed_stream_is_rejected_with_its_final_offset,
            close_only_on_a_closed_stream_reports_already_closed,
            close_only_needs_no_matching_content_type,
            closing_append_commits_its_data_and_the_closure_together,
            producer_repeating_its_closing_append_is_told_duplicate,
            producer_repeating_its_close_only_request_is_told_duplicate,
            a_closed_stream_reports_closed_before_other_conflicts,
            // idempotent producers and Stream-Seq
            producer_duplicates_are_acknowledged_without_storing_twice,
            producer_sequence_gap_is_rejected_with_expected_and_received,
            stale_producer_epoch_is_fenced,
            new_producer_epoch_must_start_at_seq_zero,
            producers_keep_independent_state,
            rejected_producer_request_does_not_advance_its_sequence,
            stream_seq_must_increase_byte_wise,
            producer_duplicate_wins_over_a_stream_seq_regression,
            // forks
            fork_reads_the_source_prefix_then_its_own_appends,
            source_appends_after_a_fork_are_invisible_in_the_fork,
            binary_fork_sub_offset_inherits_bytes_past_the_anchor,
            json_fork_sub_offset_inherits_messages_past_the_anchor,
            fork_of_a_fork_reads_through_both_ancestors,
            reads_of_a_fork_from_any_position_in_any_chunk_size_have_no_gaps,
            fork_creation_errors_name_their_cause,
            fork_creation_is_idempotent,
            forks_of_closed_streams_start_open,
            forks_do_not_inherit_producer_or_stream_seq_state,
            forks_inherit_the_source_expiry_unless_they_set_their_own,
            deleting_a_source_with_forks_soft_deletes_it,
            deleting_the_last_fork_cleans_up_a_soft_deleted_source,
            cleanup_cascades_up_a_chain_of_deleted_forks,
            deleting_forks_leaves_a_live_source_alone,
            rejected_forks_do_not_pin_their_source,
            // delete
            delete_then_recreate_gives_a_new_empty_stream,
            // live tail
            watcher_wakes_when_another_task_appends,
            watcher_times_out_when_nothing_is_appended,
            live_reader_sees_every_append_exactly_once,
            closing_wakes_a_watcher_with_closed,
            deleting_wakes_a_watcher_with_deleted,
            soft_deleting_wakes_a_watcher_with_deleted,
            fork_watcher_is_not_woken_by_source_appends,
            // expiry
            stream_past_its_expiry_time_is_not_found,
            idle_stream_expires_after_its_ttl,
            reads_extend_a_sliding_ttl,
            fork_outlives_its_expired_source,
            // owners
            a_stream_is_seen_only_by_its_owner_and_by_everyone_access,
            a_stream_without_an_owner_is_seen_by_everyone_access_only,
        );
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = $harness(stringify!($case)).await else {
                    return;
                };
                crate::$case(&harness).await;
                crate::common::Harness::finish(&harness).await;
            }
        )+
    };
}

mod sqlite {
    conformance_suite!(crate::common::SqliteHarness::create);
}

/// Runs when `TETHER_TEST_DATABASE_URL` names a PostgreSQL server; each case gets a database
/// of its own.
mod pg {
    conformance_suite!(crate::common::PgHarness::create);
}

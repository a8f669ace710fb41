//! Owners: a stream is seen by its owner and by requests that see everything; to anyone else
//! it is exactly as missing, for every operation, and nothing they do touches it.

use tether_store::{Access, Append, CreateError, CreateStream, DeleteError, LookupError};
use tether_store::{AppendError, ForkFrom};
use tether_types::ReadFrom;

use crate::common::*;

const ANN: i64 = 1;
const BOB: i64 = 2;

fn owned_by(owner: i64, request: CreateStream) -> CreateStream {
    CreateStream {
        owner: Some(owner),
        access: Access::Owner(owner),
        source_access: Access::Owner(owner),
        ..request
    }
}

fn as_user(user: i64, request: Append) -> Append {
    Append {
        access: Access::Owner(user),
        ..request
    }
}

pub(crate) async fn a_stream_is_seen_only_by_its_owner_and_by_everyone_access(h: &impl Harness) {
    let store = h.open().await;
    store
        .create("ann", owned_by(ANN, json_stream()))
        .await
        .unwrap();
    store
        .append("ann", as_user(ANN, json("[1]")))
        .await
        .unwrap();
    let bob = Access::Owner(BOB);
    for path in ["ann", "missing"] {
        assert_eq!(
            store.head_as(bob, path).await.unwrap_err(),
            LookupError::NotFound
        );
        assert_eq!(
            store
                .read_as(bob, path, ReadFrom::Start, ALL)
                .await
                .unwrap_err(),
            LookupError::NotFound
        );
        assert_eq!(
            store.watch_as(bob, path).await.unwrap_err(),
            LookupError::NotFound
        );
        assert_eq!(
            store
                .append(path, as_user(BOB, json("[2]")))
                .await
                .unwrap_err(),
            AppendError::NotFound
        );
        assert_eq!(
            store.delete_as(bob, path).await.unwrap_err(),
            DeleteError::NotFound
        );
        let fork = CreateStream {
            fork: Some(ForkFrom {
                source: path.to_string(),
                offset: None,
                sub_offset: 0,
            }),
            ..owned_by(BOB, CreateStream::default())
        };
        assert_eq!(
            store.create("bobs-fork", fork).await.unwrap_err(),
            CreateError::SourceNotFound
        );
    }
    // Another user's create at the path learns nothing about the stream there, whether or
    // not its configuration matches.
    for request in [json_stream(), bytes_stream()] {
        assert_eq!(
            store
                .create("ann", owned_by(BOB, request))
                .await
                .unwrap_err(),
            CreateError::PathTaken
        );
    }

    // The owner, and everyone-access, see it; what bob tried changed nothing. The owner
    // survives a reopen.
    let store = reopen(h, store).await;
    let ann = Access::Owner(ANN);
    assert_eq!(store.head_as(ann, "ann").await.unwrap().next.0, 1);
    let chunk = store
        .read_as(ann, "ann", ReadFrom::Start, ALL)
        .await
        .unwrap();
    assert_eq!(chunk.next.0, 1);
    assert!(
        !store
            .create("ann", owned_by(ANN, json_stream()))
            .await
            .unwrap()
            .created
    );
    assert_eq!(store.head("ann").await.unwrap().next.0, 1);
    assert_eq!(
        store.append("bobs-fork", json("[1]")).await.unwrap_err(),
        AppendError::NotFound,
        "no fork was made"
    );
    store.delete_as(ann, "ann").await.unwrap();
    assert_eq!(store.head("ann").await.unwrap_err(), LookupError::NotFound);
}

pub(crate) async fn a_stream_without_an_owner_is_seen_by_everyone_access_only(h: &impl Harness) {
    let store = h.open().await;
    store.create("nobodys", bytes_stream()).await.unwrap();
    assert_eq!(
        store
            .head_as(Access::Owner(ANN), "nobodys")
            .await
            .unwrap_err(),
        LookupError::NotFound
    );
    store.append("nobodys", bytes("x")).await.unwrap();
    assert_eq!(
        store.head_as(Access::All, "nobodys").await.unwrap().next.0,
        1
    );
}

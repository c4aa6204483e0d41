//! Builds, deletes, actions and consoles, as the conductor sees them.

use compute_agent::{BUILD_EVENT, FakeFailures, Hypervisor, TERMINATE_EVENT};
use compute_rpc::task_state::*;
use compute_rpc::vm_state::*;
use compute_rpc::*;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_walks_the_task_states_to_active() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("web-1");
        let seen = env.build(&vm).await;
        let active = InstanceChanges { launched: true, ..settled(ACTIVE, PowerState::Running) };
        assert_eq!(
            updates(&seen),
            vec![
                (task(BLOCK_DEVICE_MAPPING), strings(&[SCHEDULING, NETWORKING, BLOCK_DEVICE_MAPPING]), true),
                (task(SPAWNING), strings(&[BLOCK_DEVICE_MAPPING]), true),
                (active, strings(&[SPAWNING]), true),
            ]
        );
        assert_eq!(events(&seen), vec![started(BUILD_EVENT), succeeded(BUILD_EVENT)]);
        let Seen::Event(start) = &seen[0] else { panic!("the build starts with its event: {seen:#?}") };
        assert_eq!(start.host, env.agent.host());
        assert!(start.request_id.starts_with("req-"));
        assert_eq!(env.fake.power_state(&vm.uuid).await.unwrap(), PowerState::Running);
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spawn_asks_for_a_reschedule_and_leaves_no_guest() {
    bounded(async {
        let mut env = Env::start().await;
        env.fake.set_failures(FakeFailures { instances: ["doomed".to_owned()].into(), ..Default::default() });
        let vm = instance("doomed");
        let seen = env.build(&vm).await;
        let failed: Vec<_> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::BuildFailed(b) => Some(b),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{seen:#?}");
        assert!(failed[0].reschedule);
        assert_eq!(failed[0].host, env.agent.host());
        assert!(failed[0].reason.contains("injected failure"), "{}", failed[0].reason);
        let (name, phase) = events(&seen).pop().unwrap();
        assert_eq!(name, BUILD_EVENT);
        assert!(matches!(phase, EventPhase::Finish { success: false, details: Some(d) } if d.contains("injected")));
        // It never went active.
        assert!(updates(&seen).iter().all(|(changes, _, _)| changes.vm_state.is_none()), "{seen:#?}");
        assert!(env.fake.list_guests().await.unwrap().is_empty());
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_the_build_removes_the_spawned_guest_quietly() {
    bounded(async {
        let mut env = Env::start().await;
        // Deleted while spawning: the update to ACTIVE is refused.
        let vm = instance("short-lived");
        let uuid = vm.uuid.clone();
        env.behaviour.refuse_updates(move |u| u.uuid == uuid && u.changes.vm_state.is_some());
        let seen = env.build(&vm).await;
        let answers: Vec<bool> = updates(&seen).into_iter().map(|(_, _, applied)| applied).collect();
        assert_eq!(answers, vec![true, true, false]);
        assert!(!seen.iter().any(|s| matches!(s, Seen::BuildFailed(_))), "{seen:#?}");
        assert_eq!(events(&seen).pop().unwrap(), succeeded(BUILD_EVENT));
        assert!(env.fake.list_guests().await.unwrap().is_empty(), "the spawned guest is destroyed");

        // Deleted before the agent began: nothing is spawned at all.
        env.behaviour.refuse_updates(|_| true);
        let vm = instance("never");
        let seen = env.build(&vm).await;
        assert_eq!(updates(&seen).len(), 1, "{seen:#?}");
        assert!(!seen.iter().any(|s| matches!(s, Seen::BuildFailed(_))));
        assert!(env.fake.list_guests().await.unwrap().is_empty());
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_destroys_the_guest_and_reports_it_even_when_there_is_none() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("gone-soon");
        env.build(&vm).await;
        let seen = env.terminate(&vm.uuid).await;
        assert!(
            matches!(&seen[..], [Seen::Event(_), Seen::Terminated(t), Seen::Event(_)] if t.host == env.agent.host()),
            "{seen:#?}"
        );
        assert_eq!(events(&seen), vec![started(TERMINATE_EVENT), succeeded(TERMINATE_EVENT)]);
        assert!(env.fake.list_guests().await.unwrap().is_empty());

        // Twice, or for an instance that never had a guest here: the same.
        let seen = env.terminate(&vm.uuid).await;
        assert!(seen.iter().any(|s| matches!(s, Seen::Terminated(_))), "{seen:#?}");
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_cannot_be_destroyed_puts_its_instance_in_error() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("stuck");
        env.build(&vm).await;
        env.fake.set_failures(FakeFailures { destroy: ["stuck".to_owned()].into(), ..Default::default() });
        let seen = env.terminate(&vm.uuid).await;
        assert!(!seen.iter().any(|s| matches!(s, Seen::Terminated(_))), "{seen:#?}");
        let error = InstanceChanges {
            vm_state: Some(ERROR.into()),
            task_state: Some(None),
            power_state: Some(PowerState::Running),
            ..Default::default()
        };
        assert_eq!(updates(&seen), vec![(error, strings(&[DELETING]), true)]);
        assert!(matches!(events(&seen).pop().unwrap().1, EventPhase::Finish { success: false, details: Some(_) }));
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_ends_in_its_state() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("busy");
        env.build(&vm).await;
        let cases = [
            (Action::Stop, STOPPED, PowerState::Shutdown, vec![POWERING_OFF]),
            (Action::Start, ACTIVE, PowerState::Running, vec![POWERING_ON]),
            (
                Action::Reboot { hard: false },
                ACTIVE,
                PowerState::Running,
                vec![REBOOTING, REBOOT_PENDING, REBOOT_STARTED],
            ),
            (
                Action::Reboot { hard: true },
                ACTIVE,
                PowerState::Running,
                vec![REBOOTING_HARD, REBOOT_PENDING_HARD, REBOOT_STARTED_HARD],
            ),
            (Action::Pause, PAUSED, PowerState::Paused, vec![PAUSING]),
            (Action::Unpause, ACTIVE, PowerState::Running, vec![UNPAUSING]),
            (Action::Suspend, SUSPENDED, PowerState::Suspended, vec![SUSPENDING]),
            (Action::Resume, ACTIVE, PowerState::Running, vec![RESUMING]),
        ];
        for (action, vm_state, power, expected) in cases {
            let event = action.event_name();
            let seen = env.act(&vm, action.clone()).await;
            assert_eq!(updates(&seen), vec![(settled(vm_state, power), strings(&expected), true)], "{action:?}");
            assert_eq!(events(&seen), vec![started(event), succeeded(event)], "{action:?}");
            assert_eq!(env.fake.power_state(&vm.uuid).await.unwrap(), power, "{action:?}");
        }
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_respawns_from_the_new_image() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("phoenix");
        env.build(&vm).await;
        // A power cycle leaves lines in the old guest's console that a new guest's does not have.
        env.fake.power_off(&vm.uuid).await.unwrap();
        env.fake.power_on(&vm, &compute_agent::GuestContext::for_instance(&vm, "req-cycle")).await.unwrap();
        let before = env.fake.console_output(&vm.uuid).await.unwrap();
        let action = Action::Rebuild { image_ref: "ubuntu-24.04".into(), block_devices: Vec::new() };
        let seen = env.act(&vm, action.clone()).await;
        let rebuilding = InstanceChanges { power_state: Some(PowerState::Running), ..task(REBUILDING) };
        let end = InstanceChanges {
            launched: true,
            image_ref: Some("ubuntu-24.04".into()),
            ..settled(ACTIVE, PowerState::Running)
        };
        assert_eq!(
            updates(&seen),
            vec![
                (rebuilding, strings(&[REBUILDING]), true),
                (task(REBUILD_BLOCK_DEVICE_MAPPING), strings(&[REBUILDING]), true),
                (task(REBUILD_SPAWNING), strings(&[REBUILD_BLOCK_DEVICE_MAPPING]), true),
                (end, strings(&[REBUILD_SPAWNING]), true),
            ]
        );
        let event = action.event_name();
        assert_eq!(events(&seen), vec![started(event), succeeded(event)]);
        let after = env.fake.console_output(&vm.uuid).await.unwrap();
        assert!(!after.starts_with(&before), "a new guest, a new console");
        assert_eq!(env.fake.power_state(&vm.uuid).await.unwrap(), PowerState::Running);
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_stopped_after_its_rebuild() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("sleeper");
        env.build(&vm).await;
        env.fake.power_off(&vm.uuid).await.unwrap();
        let seen = env.act(&vm, Action::Rebuild { image_ref: "ubuntu-24.04".into(), block_devices: Vec::new() }).await;
        let last = updates(&seen).pop().expect("an end state");
        assert_eq!(last.0.vm_state.as_deref(), Some(STOPPED));
        assert_eq!(last.0.power_state, Some(PowerState::Shutdown));
        assert_eq!(env.fake.power_state(&vm.uuid).await.unwrap(), PowerState::Shutdown);
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_action_clears_the_task_state_and_keeps_the_vm_state() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("flaky");
        env.build(&vm).await;

        // The hypervisor refuses.
        env.fake.set_failures(FakeFailures { instances: ["flaky".to_owned()].into(), ..Default::default() });
        let seen = env.act(&vm, Action::Pause).await;
        let revert =
            InstanceChanges { task_state: Some(None), power_state: Some(PowerState::Running), ..Default::default() };
        assert_eq!(updates(&seen), vec![(revert.clone(), strings(&[PAUSING]), true)]);
        let (_, phase) = events(&seen).pop().unwrap();
        assert!(matches!(phase, EventPhase::Finish { success: false, details: Some(d) } if d.contains("injected")));

        // The guest is in the wrong state for it.
        env.fake.set_failures(FakeFailures::default());
        let seen = env.act(&vm, Action::Resume).await;
        assert_eq!(updates(&seen), vec![(revert, strings(&[RESUMING]), true)]);
        let (_, phase) = events(&seen).pop().unwrap();
        assert!(matches!(phase, EventPhase::Finish { success: false, details: Some(d) } if d.contains("Running")));

        // The instance was deleted meanwhile: the end update is refused and the event records it.
        let uuid = vm.uuid.clone();
        env.behaviour.refuse_updates(move |u| u.uuid == uuid);
        let seen = env.act(&vm, Action::Stop).await;
        assert_eq!(updates(&seen).len(), 1);
        let (_, phase) = events(&seen).pop().unwrap();
        assert!(matches!(phase, EventPhase::Finish { success: false, .. }));
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rebuild_leaves_the_instance_in_error() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("ashes");
        env.build(&vm).await;
        env.fake.set_failures(FakeFailures { spawn: true, ..Default::default() });
        let seen = env.act(&vm, Action::Rebuild { image_ref: "broken".into(), block_devices: Vec::new() }).await;
        let (last, expected, _) = updates(&seen).pop().unwrap();
        assert_eq!(
            last,
            InstanceChanges {
                vm_state: Some(ERROR.into()),
                task_state: Some(None),
                power_state: Some(PowerState::NoState),
                ..Default::default()
            }
        );
        assert_eq!(expected, strings(&[REBUILDING, REBUILD_BLOCK_DEVICE_MAPPING, REBUILD_SPAWNING]));
        assert!(env.fake.list_guests().await.unwrap().is_empty());
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_output_is_the_tail_of_the_guests_log() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("chatty");
        env.build(&vm).await;
        let all = env.call(&GetConsoleOutput { uuid: vm.uuid.clone(), length: None }).await.unwrap();
        assert!(all.contains("Linux version"), "{all}");
        assert!(all.ends_with("chatty login: "), "{all}");
        let tail = env.call(&GetConsoleOutput { uuid: vm.uuid.clone(), length: Some(3) }).await.unwrap();
        assert_eq!(tail.split('\n').count(), 3);
        assert!(all.ends_with(&tail));

        let unknown = env.call(&GetConsoleOutput { uuid: "nope".into(), length: None }).await.unwrap_err();
        assert!(matches!(&unknown, bus::Error::Remote { kind, .. } if kind == "InstanceNotFound"), "{unknown}");
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_one_instance_do_not_interleave() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("queued");
        env.build(&vm).await;
        // Two actions sent back to back: whichever runs first, the other starts only after it finished.
        env.send(&InstanceAction { instance: vm.clone(), action: Action::Pause, request_id: req() }).await;
        env.send(&InstanceAction { instance: vm.clone(), action: Action::Suspend, request_id: req() }).await;
        let mut finished = 0;
        let seen = env
            .recorder
            .until("both actions to finish", move |s| {
                if matches!(s, Seen::Event(e) if matches!(e.phase, EventPhase::Finish { .. })) {
                    finished += 1;
                }
                finished == 2
            })
            .await;
        let phases: Vec<_> =
            events(&seen).into_iter().map(|(name, phase)| (name, phase == EventPhase::Start)).collect();
        assert_eq!(phases.len(), 4, "{seen:#?}");
        assert!(phases[0].1 && !phases[1].1 && phases[2].1 && !phases[3].1, "{phases:?}");
        assert_eq!(phases[0].0, phases[1].0);
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_of_a_build_and_attached_later_reach_the_driver() {
    bounded(async {
        let mut env = Env::start().await;
        let vm = instance("with-volumes");
        let device = |id: &str, name: &str, boot: Option<i64>| BlockDeviceSpec {
            volume_id: id.into(),
            device_name: name.into(),
            boot_index: boot,
            connection_info: serde_json::json!({"driver_volume_type": "fake", "data": {"volume_id": id}}),
        };
        let msg = BuildAndRunInstance {
            instance: vm.clone(),
            node: env.agent.host().into(),
            request_id: req(),
            vifs: Vec::new(),
            block_devices: vec![device("root-vol", "/dev/vda", Some(0))],
        };
        env.send(&msg).await;
        env.until_finished(&vm.uuid, BUILD_EVENT).await;
        let names = |v: Option<Vec<BlockDeviceSpec>>| v.unwrap().into_iter().map(|d| d.volume_id).collect::<Vec<_>>();
        assert_eq!(names(env.fake.volumes(&vm.uuid)), vec!["root-vol"]);

        let attach = AttachVolume { instance: vm.clone(), block_device: device("data-vol", "/dev/vdb", None), request_id: req() };
        env.call(&attach).await.unwrap();
        assert_eq!(names(env.fake.volumes(&vm.uuid)), vec!["root-vol", "data-vol"]);
        // The same volume twice is the driver's error, passed back to the caller.
        assert!(env.call(&attach).await.is_err());

        let detach = DetachVolume { uuid: vm.uuid.clone(), volume_id: "data-vol".into(), request_id: req() };
        env.call(&detach).await.unwrap();
        assert_eq!(names(env.fake.volumes(&vm.uuid)), vec!["root-vol"]);
        // An instance without a guest has no disk to detach.
        let gone = DetachVolume { uuid: "no-such-guest".into(), volume_id: "data-vol".into(), request_id: req() };
        env.call(&gone).await.unwrap();
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_builds_are_counted_and_reported_until_one_succeeds() {
    bounded(async {
        let mut env = Env::start().await;
        let build = |name: &str, host: &str| BuildAndRunInstance {
            instance: instance(name),
            node: host.into(),
            request_id: req(),
            vifs: Vec::new(),
            block_devices: Vec::new(),
        };
        let host = env.agent.host().to_string();
        env.fake.set_failures(FakeFailures { spawn: true, ..Default::default() });
        for n in 1..=2 {
            env.send(&build(&format!("doomed-{n}"), &host)).await;
            let seen = env
                .recorder
                .until("a report of the failed build", |s| matches!(s, Seen::Resources(r) if r.resources.failed_builds == n))
                .await;
            let Some(Seen::Resources(report)) = seen.last() else { unreachable!() };
            assert_eq!(report.resources.supported_instances, [["x86_64".to_string(), "fake".into(), "hvm".into()]]);
        }
        // A success resets the count, and says so at once.
        env.fake.set_failures(FakeFailures::default());
        env.send(&build("fine", &host)).await;
        env.recorder
            .until("a report of the reset", |s| matches!(s, Seen::Resources(r) if r.resources.failed_builds == 0))
            .await;
        env.stop().await;
    })
    .await
}

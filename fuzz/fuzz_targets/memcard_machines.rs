//! Charge and payment machines presented a memory card whose memory is arbitrary bytes: they
//! never panic; a payment never succeeds (nothing in the input carries a signature of this
//! center's machines); a refused card is never written; a charge succeeds only on a new
//! card, which then verifies with the charged amount.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use valuecard_core::cert::Role;
use valuecard_core::ids::DeviceId;
use valuecard_core::money::Amount;
use valuecard_core::time::{Date, FixedClock};
use valuecard_sam::testing::TestCenter;
use valuecard_sam::{Sam, SoftwareSam, ValueFormat};
use valuecard_terminal::memcard::testing::MemoryCardDouble;
use valuecard_terminal::memcard::{ChargeMachine, PaymentMachine, PresentedCard};
use valuecard_terminal::store::MemoryStore;

const TODAY: Date = Date(20_600);

/// The SAM images of one charge and one payment machine, the charger holding float.
fn images() -> &'static (Vec<u8>, Vec<u8>) {
    static IMAGES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut center = TestCenter::new(&mut rng, DeviceId([0xCE; 8]), TODAY);
        let mut charger = center.install(Role::ChargeMachine, &mut rng);
        let payer = center.install(Role::PaymentMachine, &mut rng);
        let grant = center.grant(charger.device_id(), 1, Amount::new(1_000_000).unwrap());
        charger.take_float_grant(&grant).unwrap();
        (charger.to_image(), payer.to_image())
    })
}

fn sam(image: &[u8]) -> SoftwareSam {
    SoftwareSam::from_image(image)
        .unwrap()
        .with_clock(Box::new(FixedClock(TODAY)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, memory)) = data.split_first() else {
        return;
    };
    let (charger_image, payer_image) = images();
    let mut card = MemoryCardDouble::from_memory(memory);
    let before = card.memory().to_vec();
    let clock = Box::new(FixedClock(TODAY));
    let amount = Amount::new(u64::from(selector >> 1) + 1).unwrap();
    if selector & 1 == 0 {
        let mut payer = PaymentMachine::new(sam(payer_image), MemoryStore::default(), clock).unwrap();
        assert!(payer.pay(&mut card, amount, None).is_err());
        assert_eq!(card.memory(), &before[..], "a refused card was written");
        return;
    }
    let mut charger = ChargeMachine::new(sam(charger_image), MemoryStore::default(), clock).unwrap();
    match charger.charge(&mut card, amount, ValueFormat::Plain, None) {
        Ok(receipt) => {
            assert_eq!(receipt.balance_before, Amount::ZERO);
            let content = PresentedCard::read(&mut card).unwrap().content().unwrap();
            let state = sam(payer_image).check_memcard_content(&content, TODAY).unwrap();
            assert_eq!(state.balance(), amount);
        }
        Err(_) => assert_eq!(card.memory(), &before[..], "a refused card was written"),
    }
});

//! Objects kept as LZ4-compressed JSON in the operator's caches: a fraction of the memory of
//! the parsed object (its maps, strings and option-heavy structs), and about half of the
//! JSON's, since the keys every object of a kind shares come from that kind's dictionary.
//! Only the objects a pass works on are ever unpacked.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind of object the caches pack, and the JSON its objects share.
pub trait Packable: Serialize + DeserializeOwned {
    /// Sample JSON with the keys (and the fixed values) objects of this kind share.
    fn dictionary() -> &'static [u8];
}

/// One packed object.
pub struct Packed<T> {
    bytes: Box<[u8]>,
    kind: PhantomData<fn() -> T>,
}

impl<T: Packable> Packed<T> {
    pub fn pack(value: &T) -> Self {
        let json = serde_json::to_vec(value).expect("a cached object serializes");
        let bytes = lz4_flex::block::compress_prepend_size_with_dict(&json, T::dictionary());
        Packed {
            bytes: bytes.into_boxed_slice(),
            kind: PhantomData,
        }
    }

    pub fn unpack(&self) -> T {
        let json =
            lz4_flex::block::decompress_size_prepended_with_dict(&self.bytes, T::dictionary())
                .expect("packed by Packed::pack");
        serde_json::from_slice(&json).expect("packed by Packed::pack")
    }
}

impl<T> Clone for Packed<T> {
    fn clone(&self) -> Self {
        Packed {
            bytes: self.bytes.clone(),
            kind: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Packed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.bytes.len())
    }
}

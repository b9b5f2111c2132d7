//! Byte encodings of the registry's composite keys. Member ids never contain NUL (the HTTP layer
//! refuses control characters), so NUL separates the parts unambiguously.

use crate::model::ImageId;

pub fn member_prefix(member: &str) -> Vec<u8> {
    let mut key = member.as_bytes().to_vec();
    key.push(0);
    key
}

pub fn member_image(member: &str, image: &ImageId) -> Vec<u8> {
    let mut key = member_prefix(member);
    key.extend_from_slice(image.as_str().as_bytes());
    key
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// EIP-712's own example (a Mail between two Persons, a nested struct), checked on chain with OpenZeppelin's
/// EIP712 (domain "TypedMail", version "1", this chain and this contract) and ECDSA.
contract TypedMail is EIP712 {
    struct Person {
        string name;
        address wallet;
    }

    struct Mail {
        Person from;
        Person to;
        string contents;
    }

    bytes32 private constant PERSON_TYPEHASH = keccak256("Person(string name,address wallet)");
    bytes32 private constant MAIL_TYPEHASH =
        keccak256("Mail(Person from,Person to,string contents)Person(string name,address wallet)");

    constructor() EIP712("TypedMail", "1") {}

    /// The EIP-712 digest of `mail` in this contract's domain: what a wallet signs.
    function digest(Mail calldata mail) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(MAIL_TYPEHASH, _hash(mail.from), _hash(mail.to), keccak256(bytes(mail.contents)))));
    }

    /// Who signed `mail` (address(0) for a malformed signature): the check a contract makes.
    function signerOf(Mail calldata mail, bytes calldata signature) public view returns (address) {
        (address signer, ECDSA.RecoverError error, ) = ECDSA.tryRecover(digest(mail), signature);
        return error == ECDSA.RecoverError.NoError ? signer : address(0);
    }

    /// Whether `mail` was signed by its sender's wallet.
    function verify(Mail calldata mail, bytes calldata signature) external view returns (bool) {
        return signerOf(mail, signature) == mail.from.wallet;
    }

    function _hash(Person calldata person) private pure returns (bytes32) {
        return keccak256(abi.encode(PERSON_TYPEHASH, keccak256(bytes(person.name)), person.wallet));
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// Code for an EIP-7702 delegation: an account that delegates here answers `self()` with its own address, which
/// shows the call ran the delegated code in the account's context.
contract Delegate {
    event Pinged(address indexed account, address indexed caller);

    function self() external view returns (address) {
        return address(this);
    }

    function ping() external {
        emit Pinged(address(this), msg.sender);
    }
}

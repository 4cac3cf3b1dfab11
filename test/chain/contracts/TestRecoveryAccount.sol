// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BaseAccount} from "@account-abstraction/contracts-v07/core/BaseAccount.sol";
import {SIG_VALIDATION_FAILED, SIG_VALIDATION_SUCCESS} from "@account-abstraction/contracts-v07/core/Helpers.sol";
import {IEntryPoint} from "@account-abstraction/contracts-v07/interfaces/IEntryPoint.sol";
import {PackedUserOperation} from "@account-abstraction/contracts-v07/interfaces/PackedUserOperation.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

/// A small smart account for the chain tests, with what SimpleAccount lacks: ERC-1271, an owner change and social
/// recovery. ERC-4337 (EntryPoint 0.7): a user operation is valid when signed by the owner over
/// toEthSignedMessageHash(userOpHash), as SimpleAccount 0.7 checks it. The owner (directly, or through a user
/// operation) can hand the account to a new owner. Guardians can too, without the owner: once `threshold` of them
/// approve the same new owner, anyone may finalize it after `recoveryDelay` seconds; until then the owner can
/// cancel. A test contract, not a wallet: no upgrades, no guardian management, no replay protection for ERC-1271
/// hashes across accounts of one owner.
contract TestRecoveryAccount is BaseAccount, IERC1271 {
    IEntryPoint private immutable _entryPoint;
    uint256 public immutable threshold;
    uint256 public immutable recoveryDelay;

    address public owner;
    mapping(address => bool) public isGuardian;

    /// The recovery under way: the owner the guardians approve, how many did, and when it may be finalized (0
    /// until `threshold` approved). A different proposal or a cancel starts a new round: earlier approvals lapse.
    address public proposedOwner;
    uint256 public approvals;
    uint256 public recoveryReadyAt;
    uint256 private _round;
    mapping(uint256 => mapping(address => bool)) private _approved;

    event OwnerChanged(address indexed previousOwner, address indexed newOwner);
    event RecoveryApproved(address indexed guardian, address indexed proposedOwner, uint256 approvals);
    event RecoveryCancelled(address indexed proposedOwner);

    error NotOwner(address caller);
    error NotGuardian(address caller);
    error AlreadyApproved(address guardian);
    error RecoveryNotReady(uint256 readyAt);
    error InvalidOwner();
    error InvalidGuardians();

    constructor(IEntryPoint entryPoint_, address owner_, address[] memory guardians, uint256 threshold_, uint256 recoveryDelay_) {
        if (owner_ == address(0)) revert InvalidOwner();
        if (threshold_ == 0 || threshold_ > guardians.length) revert InvalidGuardians();
        _entryPoint = entryPoint_;
        owner = owner_;
        threshold = threshold_;
        recoveryDelay = recoveryDelay_;
        for (uint256 i = 0; i < guardians.length; i++) {
            if (guardians[i] == address(0) || isGuardian[guardians[i]]) revert InvalidGuardians();
            isGuardian[guardians[i]] = true;
        }
        emit OwnerChanged(address(0), owner_);
    }

    /// The owner itself, or the account acting on a user operation the owner signed (EntryPoint, or `execute`).
    modifier onlyOwner() {
        if (msg.sender != owner && msg.sender != address(_entryPoint) && msg.sender != address(this)) revert NotOwner(msg.sender);
        _;
    }

    receive() external payable {}

    function entryPoint() public view override returns (IEntryPoint) {
        return _entryPoint;
    }

    function execute(address dest, uint256 value, bytes calldata data) external onlyOwner {
        (bool ok, bytes memory result) = dest.call{value: value}(data);
        if (!ok) {
            assembly {
                revert(add(result, 32), mload(result))
            }
        }
    }

    /// Also drops a recovery under way: the owner is evidently still in control.
    function changeOwner(address newOwner) external onlyOwner {
        _cancelRecovery();
        _setOwner(newOwner);
    }

    function approveRecovery(address newOwner) external {
        if (!isGuardian[msg.sender]) revert NotGuardian(msg.sender);
        if (newOwner == address(0)) revert InvalidOwner();
        if (newOwner != proposedOwner) {
            _resetRecovery();
            proposedOwner = newOwner;
        }
        if (_approved[_round][msg.sender]) revert AlreadyApproved(msg.sender);
        _approved[_round][msg.sender] = true;
        approvals += 1;
        if (approvals == threshold) recoveryReadyAt = block.timestamp + recoveryDelay;
        emit RecoveryApproved(msg.sender, newOwner, approvals);
    }

    /// Anyone may finalize an approved recovery once its time lock has passed.
    function finalizeRecovery() external {
        if (recoveryReadyAt == 0 || block.timestamp < recoveryReadyAt) revert RecoveryNotReady(recoveryReadyAt);
        address recovered = proposedOwner;
        _resetRecovery();
        _setOwner(recovered);
    }

    function cancelRecovery() external onlyOwner {
        _cancelRecovery();
    }

    /// ERC-1271: `signature` is the owner's over `hash` itself.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        return _isOwner(hash, signature) ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
    }

    function _validateSignature(PackedUserOperation calldata userOp, bytes32 userOpHash) internal view override returns (uint256) {
        return _isOwner(MessageHashUtils.toEthSignedMessageHash(userOpHash), userOp.signature) ? SIG_VALIDATION_SUCCESS : SIG_VALIDATION_FAILED;
    }

    function _isOwner(bytes32 hash, bytes calldata signature) private view returns (bool) {
        (address signer, ECDSA.RecoverError error, ) = ECDSA.tryRecover(hash, signature);
        return error == ECDSA.RecoverError.NoError && signer == owner;
    }

    function _setOwner(address newOwner) private {
        if (newOwner == address(0)) revert InvalidOwner();
        emit OwnerChanged(owner, newOwner);
        owner = newOwner;
    }

    function _cancelRecovery() private {
        if (proposedOwner != address(0)) emit RecoveryCancelled(proposedOwner);
        _resetRecovery();
    }

    function _resetRecovery() private {
        _round += 1;
        proposedOwner = address(0);
        approvals = 0;
        recoveryReadyAt = 0;
    }
}

"""The interpreter and command API on real SDK-compiled DARs: creates with derived fields,
choices (consuming, non-consuming, nested), keys, exceptions with rollback, interfaces and
deep recursion, all against an in-memory `LedgerView`."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cairn.ledger.codec import CodecError, JsonCodec, substitute
from cairn.ledger.lf import errors
from cairn.ledger.lf.ast import Identifier, PrimType, TBuiltin, TCon, Type
from cairn.ledger.lf.dar import Dar, load_dar
from cairn.ledger.lf.engine import Contract, CreatedEvent, Engine, ExercisedEvent, Transaction
from cairn.ledger.lf.value import Record, Some, value_key

ENCODER_DARS = ["test-1.6.dar", "test-1.7.dar", "test-1.8.dar", "test-1.11.dar",
                "test-1.12.dar", "test-1.13.dar", "test-1.14.dar", "test-1.15.dar"]


class MemoryLedger:
    """A minimal active-contract store implementing `LedgerView`."""

    def __init__(self) -> None:
        self.contracts: dict[str, Contract] = {}
        self.keys: dict[tuple[Identifier, Any], str] = {}

    def lookup_contract(self, contract_id: str) -> Contract | None:
        return self.contracts.get(contract_id)

    def lookup_key(self, template_id: Identifier, key: Any) -> str | None:
        return self.keys.get((template_id, value_key(key)))

    def commit(self, tx: Transaction) -> Transaction:
        for contract in tx.archived:
            del self.contracts[contract.contract_id]
            if contract.has_key:
                del self.keys[(contract.template_id, value_key(contract.key))]
        for contract in tx.created:
            self.contracts[contract.contract_id] = contract
            if contract.has_key:
                self.keys[(contract.template_id, value_key(contract.key))] = contract.contract_id
        return tx


class Fixture:
    def __init__(self, dar: Dar) -> None:
        self.dar = dar
        self.engine = Engine(dar.packages.values())
        self.codec = JsonCodec(self.engine.packages)
        self.ledger = MemoryLedger()

    def ident(self, qualified: str) -> Identifier:
        module, name = qualified.split(":")
        return Identifier(self.dar.main_package_id, module, name)

    def create(self, template: str, payload: dict[str, Any], act_as: list[str]) -> Contract:
        template_id = self.ident(template)
        argument = self.codec.decode(TCon(template_id), payload)
        tx = self.ledger.commit(self.engine.create(template_id, argument, act_as=act_as,
                                                      ledger=self.ledger))
        assert len(tx.created) == 1
        return tx.created[0]

    def exercise(self, contract: Contract, choice: str, payload: Any, act_as: list[str]
                 ) -> Transaction:
        arg_type = self.engine.choice(contract.template_id, choice).arg_type
        argument = self.codec.decode(arg_type, payload)
        return self.ledger.commit(self.engine.exercise(
            contract.contract_id, choice, argument, act_as=act_as, ledger=self.ledger))

    def result_json(self, contract: Contract, choice: str, tx: Transaction) -> Any:
        return self.codec.encode(self.engine.choice(contract.template_id, choice).return_type,
                                 tx.result)

    def payload(self, contract: Contract) -> Any:
        return self.codec.encode(TCon(contract.template_id), contract.argument)


@pytest.fixture(scope="module")
def model(shared_fixtures: Path) -> Fixture:
    return Fixture(load_dar((shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()))


@pytest.fixture(scope="module")
def semantic(shared_fixtures: Path) -> Fixture:
    return Fixture(load_dar((shared_fixtures / "daml" / "semantic-tests-1.15.dar").read_bytes()))


# ------------------------------------------------------------------------------ sample payloads
def sample_json(codec: JsonCodec, type_: Type, depth: int = 0) -> Any:
    """A valid JSON value for any serializable type (first constructors, one-element lists)."""
    type_ = codec.resolve(type_)
    if isinstance(type_, TBuiltin):
        samples: dict[PrimType, Any] = {
            PrimType.TEXT: "some text", PrimType.PARTY: "Alice", PrimType.INT64: "3",
            PrimType.NUMERIC: "1.25", PrimType.BOOL: True, PrimType.UNIT: {},
            PrimType.DATE: "2020-02-29", PrimType.TIMESTAMP: "2020-01-01T10:20:30.123456Z",
            PrimType.CONTRACT_ID: "00" + "ab" * 32,
        }
        if type_.prim in samples:
            return samples[type_.prim]
        inner = [sample_json(codec, arg, depth + 1) for arg in type_.args]
        if type_.prim is PrimType.LIST:
            return inner
        if type_.prim is PrimType.OPTIONAL:
            nested = codec.resolve(type_.args[0])
            is_nested = isinstance(nested, TBuiltin) and nested.prim is PrimType.OPTIONAL
            return [inner[0]] if is_nested else inner[0]
        if type_.prim is PrimType.TEXTMAP:
            return {"key": inner[0]}
        if type_.prim is PrimType.GENMAP:
            return [inner]
    if isinstance(type_, TCon):
        data_type = codec.packages.data_type(type_.tycon)
        if data_type.kind == "record":
            return {name: sample_json(codec, field_type, depth + 1)
                    for name, field_type in codec.record_fields(type_)}
        if data_type.kind == "enum":
            return data_type.constructors[-1]
        if data_type.kind == "variant":
            env = {p.name: a for p, a in zip(data_type.params, type_.args, strict=True)}
            return {"tag": data_type.constructors[0],
                    "value": sample_json(codec, substitute(data_type.fields[0][1], env), depth + 1)}
    raise AssertionError(f"no sample for {type_}")


@pytest.mark.parametrize("dar_name", ENCODER_DARS)
def test_every_encoder_template_creates_from_json_and_encodes_back(shared_fixtures: Path,
                                                                    dar_name: str) -> None:
    fixture = Fixture(load_dar((shared_fixtures / "daml" / dar_name).read_bytes()))
    templates = [t for m in fixture.dar.main_package.modules.values()
                 for t in m.templates.values()]
    assert len(templates) >= 16
    for template in templates:
        payload = sample_json(fixture.codec, TCon(template.name))
        contract = fixture.create(template.name.qualified_name, payload, act_as=["Alice"])
        assert fixture.payload(contract) == fixture.codec.encode(
            TCon(template.name), fixture.codec.decode(TCon(template.name), payload))
        assert contract.signatories == ("Alice",)
        assert contract.template_id == template.name


def test_numeric_round_trips_through_create(shared_fixtures: Path) -> None:
    fixture = Fixture(load_dar((shared_fixtures / "daml" / "test-1.15.dar").read_bytes()))
    payload = {"x0": "17", "x10": "0.0000000001", "x17": "-3.14159265358979323",
               "x37": "0.1234567890123456789012345678901234567", "party": "Alice"}
    contract = fixture.create("NumericMod:Box", payload, act_as=["Alice"])
    assert fixture.payload(contract) == {**payload, "x0": "17.0"}


# ------------------------------------------------------------------------------ Iou
IOU = {"issuer": "Bank", "owner": "Alice", "currency": "USD", "amount": "100.25",
       "observers": ["Carol"]}


def test_iou_create_derives_signatories_and_observers(model: Fixture) -> None:
    contract = model.create("Iou:Iou", IOU, act_as=["Bank", "Alice"])
    assert contract.signatories == ("Alice", "Bank")
    assert contract.observers == ("Carol",)
    assert contract.agreement_text == ""
    assert contract.key is None and not contract.has_key
    assert model.payload(contract) == IOU
    assert contract.contract_id.startswith("00") and len(contract.contract_id) == 66


def test_create_requires_all_signatories_in_act_as(model: Fixture) -> None:
    with pytest.raises(errors.AuthorizationError, match="requires authorization from Bank"):
        model.create("Iou:Iou", IOU, act_as=["Alice"])


def test_ensure_failure_is_a_precondition_violation(model: Fixture) -> None:
    with pytest.raises(errors.PreconditionFailed, match="Template precondition violated"):
        model.create("Iou:Iou", {**IOU, "amount": "0"}, act_as=["Bank", "Alice"])


def test_agreement_text(model: Fixture) -> None:
    contract = model.create("Test:Dummy", {"operator": "Alice"}, act_as=["Alice"])
    assert contract.agreement_text == "'Alice' operates a dummy."


def test_iou_transfer_archives_and_creates(model: Fixture) -> None:
    iou = model.create("Iou:Iou", IOU, act_as=["Bank", "Alice"])
    tx = model.exercise(iou, "Iou_Transfer", {"newOwner": "Bob"}, act_as=["Alice"])
    events = tx.events()
    assert isinstance(events[0], ExercisedEvent) and events[0].consuming
    assert events[0].choice == "Iou_Transfer" and events[0].acting_parties == ("Alice",)
    assert isinstance(events[1], CreatedEvent)
    transfer = tx.created[0]
    assert tx.result == transfer.contract_id
    assert tx.archived_contract_ids == [iou.contract_id]
    assert transfer.template_id == model.ident("Iou:IouTransfer")
    assert transfer.observers == ("Bob",)
    assert model.payload(transfer) == {"iou": IOU, "newOwner": "Bob"}
    assert iou.contract_id in tx.input_contracts
    # The new owner accepts: a nested record update (owner, observers) in the choice body.
    accepted = model.exercise(transfer, "IouTransfer_Accept", {}, act_as=["Bob"])
    assert model.payload(accepted.created[0]) == {**IOU, "owner": "Bob", "observers": []}


def test_iou_split_and_merge(model: Fixture) -> None:
    iou = model.create("Iou:Iou", IOU, act_as=["Bank", "Alice"])
    split = model.exercise(iou, "Iou_Split", {"splitAmount": "30.125"}, act_as=["Alice"])
    first, second = model.result_json(iou, "Iou_Split", split).values()
    amounts = {c.contract_id: model.payload(c)["amount"] for c in split.created}
    assert amounts == {first: "30.125", second: "70.125"}
    part_a, part_b = (model.ledger.contracts[first], model.ledger.contracts[second])
    merged = model.exercise(part_a, "Iou_Merge", {"otherCid": second}, act_as=["Alice"])
    assert {c.contract_id for c in merged.archived} == {part_a.contract_id, part_b.contract_id}
    # Merge fetches the other Iou, archives it (a nested Archive exercise), then creates.
    kinds = [type(e).__name__ for e in merged.events()]
    assert kinds == ["ExercisedEvent", "FetchedEvent", "ExercisedEvent", "CreatedEvent"]
    assert merged.events()[2].choice == "Archive"  # type: ignore[union-attr]
    assert model.payload(merged.created[0])["amount"] == "100.25"


def test_exercise_by_wrong_controller_is_rejected(model: Fixture) -> None:
    iou = model.create("Iou:Iou", IOU, act_as=["Bank", "Alice"])
    # Carol observes the Iou (so she can see it) but is not its controller.
    with pytest.raises(errors.AuthorizationError, match="requires authorization from Alice"):
        model.exercise(iou, "Iou_Transfer", {"newOwner": "Bob"}, act_as=["Carol"])


def test_contracts_invisible_to_the_submitters_are_not_found(model: Fixture) -> None:
    iou = model.create("Iou:Iou", IOU, act_as=["Bank", "Alice"])
    with pytest.raises(errors.ContractNotFound, match="Contract could not be found"):
        model.exercise(iou, "Iou_Transfer", {"newOwner": "Bob"}, act_as=["Mallory"])
    # readAs widens what the command can see, not what it may authorize.
    with pytest.raises(errors.AuthorizationError):
        arg_type = model.engine.choice(iou.template_id, "Iou_Transfer").arg_type
        model.engine.exercise(iou.contract_id, "Iou_Transfer",
                              model.codec.decode(arg_type, {"newOwner": "Bob"}),
                              act_as=["Mallory"], read_as=["Alice"], ledger=model.ledger)


def test_values_nested_deeper_than_100_are_rejected(model: Fixture) -> None:
    template_id = model.ident("Iou:Iou")
    argument = model.codec.decode(TCon(template_id), IOU)
    deep: Any = argument
    for _ in range(101):
        deep = Some(deep)
    nested = Record(template_id, argument.fields, (*argument.values[:4], (deep,)))
    with pytest.raises(errors.InvalidArgument, match="maximum nesting depth of 100"):
        model.engine.create(template_id, nested, act_as=["Bank", "Alice"])


def test_archived_contract_cannot_be_exercised(model: Fixture) -> None:
    iou = model.create("Iou:Iou", IOU, act_as=["Bank", "Alice"])
    model.exercise(iou, "Archive", {}, act_as=["Bank", "Alice"])
    with pytest.raises(errors.ContractNotFound, match=iou.contract_id):
        model.exercise(iou, "Iou_Transfer", {"newOwner": "Bob"}, act_as=["Alice"])


def test_create_and_exercise(model: Fixture) -> None:
    template_id = model.ident("Iou:Iou")
    tx = model.engine.create_and_exercise(
        template_id, model.codec.decode(TCon(template_id), IOU), "Iou_Transfer",
        model.codec.decode(TCon(model.ident("Iou:Iou_Transfer")), {"newOwner": "Bob"}),
        act_as=["Bank", "Alice"], ledger=model.ledger)
    kinds = [type(e).__name__ for e in tx.events()]
    assert kinds == ["CreatedEvent", "ExercisedEvent", "CreatedEvent"]
    # The Iou is created and consumed in the same transaction: only the transfer remains.
    assert [c.template_id.name for c in tx.created] == ["IouTransfer"]
    assert tx.archived == []


def test_non_consuming_choice_keeps_the_contract(model: Fixture) -> None:
    dummy = model.create("Test:Dummy", {"operator": "Alice"}, act_as=["Alice"])
    tx = model.exercise(dummy, "Clone", {}, act_as=["Alice"])
    assert tx.archived == []
    assert tx.result == tx.created[0].contract_id
    assert dummy.contract_id in model.ledger.contracts


def test_failing_choice_raises_a_clear_error(model: Fixture) -> None:
    dummy = model.create("Test:Dummy", {"operator": "Alice"}, act_as=["Alice"])
    with pytest.raises(errors.UnhandledException, match="AssertionFailed"):
        model.exercise(dummy, "FailingClone", {}, act_as=["Alice"])


# ------------------------------------------------------------------------------ keys
def test_keyed_template_key_and_maintainers(model: Fixture) -> None:
    payload = {"tkParty": "Alice", "tkKey": "k1", "tkDisclosedTo": ["Bob"]}
    contract = model.create("Test:TextKey", payload, act_as=["Alice"])
    assert contract.has_key and contract.maintainers == ("Alice",)
    tx = model.engine.create(contract.template_id, contract.argument, act_as=["Alice"])
    assert tx.keys_needed_free == [(contract.template_id, contract.key)]
    key_type = model.engine.key_type(model.ident("Test:TextKey"))
    assert model.codec.encode(key_type, contract.key) == {"_1": "Alice", "_2": "k1"}
    with pytest.raises(errors.DuplicateContractKey):
        model.create("Test:TextKey", payload, act_as=["Alice"])


def test_key_lookups_inside_choices(model: Fixture) -> None:
    text_key = model.create("Test:TextKey", {"tkParty": "Dora", "tkKey": "k", "tkDisclosedTo": []},
                            act_as=["Dora"])
    ops = model.create("Test:TextKeyOperations", {"tkoParty": "Dora"}, act_as=["Dora"])
    model.exercise(ops, "TKOLookup", {"keyToLookup": ["Dora", "k"],
                                      "expected": text_key.contract_id}, act_as=["Dora"])
    model.exercise(ops, "TKOLookup", {"keyToLookup": ["Dora", "other"], "expected": None},
                   act_as=["Dora"])
    model.exercise(ops, "TKOFetch", {"keyToFetch": ["Dora", "k"],
                                     "expectedCid": text_key.contract_id}, act_as=["Dora"])
    # Consuming the keyed contract inside the transaction frees the key for later lookups.
    tx = model.exercise(ops, "TKOConsumeAndLookup", {"cidToConsume": text_key.contract_id,
                                                    "keyToLookup": ["Dora", "k"]},
                        act_as=["Dora"])
    assert [c.contract_id for c in tx.archived] == [text_key.contract_id]


def test_exercise_by_key(model: Fixture) -> None:
    model.create("Test:TextKey", {"tkParty": "Erin", "tkKey": "x", "tkDisclosedTo": []},
                 act_as=["Erin"])
    template_id = model.ident("Test:TextKey")
    key = model.codec.decode(model.engine.key_type(template_id), ["Erin", "x"])
    choice_arg = model.codec.decode(TCon(model.ident("Test:TextKeyChoice")), {})
    tx = model.ledger.commit(model.engine.exercise_by_key(
        template_id, key, "TextKeyChoice", choice_arg, act_as=["Erin"], ledger=model.ledger))
    assert len(tx.archived) == 1
    with pytest.raises(errors.ContractKeyNotFound):
        model.engine.exercise_by_key(template_id, key, "TextKeyChoice", choice_arg,
                                     act_as=["Erin"], ledger=model.ledger)


# ------------------------------------------------------------------------------ exceptions
def test_caught_exception_returns_handler_result(semantic: Fixture) -> None:
    tester = semantic.create("Exceptions:ExceptionTester", {"p": "Alice"}, act_as=["Alice"])
    tx = semantic.exercise(tester, "ThrowCaught", {}, act_as=["Alice"])
    assert tx.result == "exception message"


def test_uncaught_exception_message(semantic: Fixture) -> None:
    tester = semantic.create("Exceptions:ExceptionTester", {"p": "Alice"}, act_as=["Alice"])
    with pytest.raises(errors.UnhandledException,
                       match="Unhandled Daml exception: Exceptions:E: exception message"):
        semantic.exercise(tester, "ThrowUncaught", {}, act_as=["Alice"])


def test_rollback_undoes_creates_and_archives(semantic: Fixture) -> None:
    tester = semantic.create("Exceptions:ExceptionTester", {"p": "Bob"}, act_as=["Bob"])
    tx = semantic.exercise(tester, "RollbackCreate", {}, act_as=["Bob"])
    assert tx.created == [] and tx.archived == []
    other = semantic.create("Exceptions:ExceptionTester", {"p": "Bob"}, act_as=["Bob"])
    tx = semantic.exercise(tester, "RollbackConsuming", {"cid": other.contract_id},
                           act_as=["Bob"])
    assert tx.archived == []
    assert other.contract_id in semantic.ledger.contracts


def test_rolled_back_key_is_free_again(semantic: Fixture) -> None:
    tester = semantic.create("Exceptions:ExceptionTester", {"p": "Carl"}, act_as=["Carl"])
    semantic.exercise(tester, "DuplicateKey", {}, act_as=["Carl"])
    tx = semantic.exercise(tester, "RolledbackDuplicateKey", {}, act_as=["Carl"])
    assert [c.template_id.name for c in tx.created] == ["WithSimpleKey"]


def test_nested_catch_by_outer_handler(semantic: Fixture) -> None:
    tester = semantic.create("Exceptions:ExceptionTester", {"p": "Dan"}, act_as=["Dan"])
    tx = semantic.exercise(tester, "NestedCatch", {}, act_as=["Dan"])
    nested = tx.roots[0]
    assert isinstance(nested, ExercisedEvent)
    # The inner exercise was rolled back with the exception.
    assert nested.children == []


# ------------------------------------------------------------------------------ interfaces
def test_interface_choice_and_view(semantic: Fixture) -> None:
    contract = semantic.create("Interface:T", {"owner": "Alice"}, act_as=["Alice"])
    interface_id = Identifier(semantic.dar.main_package_id, "Interface1", "I")
    choice = semantic.engine.choice(interface_id, "MyArchive")
    tx = semantic.engine.exercise(contract.contract_id, "MyArchive",
                                  semantic.codec.decode(choice.arg_type, {}), act_as=["Alice"],
                                  ledger=semantic.ledger, interface_id=interface_id)
    assert tx.result == "Interface1.I"
    assert [c.contract_id for c in tx.archived] == [contract.contract_id]
    views = semantic.create("InterfaceViews:T1", {"p": "Alice", "a": "7"}, act_as=["Alice"])
    view_id = Identifier(semantic.dar.main_package_id, "InterfaceViews", "I")
    view = semantic.engine.interface_view(view_id, views)
    assert semantic.codec.encode(TCon(Identifier(view_id.package_id, "InterfaceViews",
                                                 "View")), view) == {"a": "7", "b": True}


# ------------------------------------------------------------------------------ evaluation depth
def test_deep_recursion_does_not_use_the_python_stack(semantic: Fixture) -> None:
    handler = semantic.create("DeeplyNestedValue:Handler", {"party": "Alice"}, act_as=["Alice"])
    tx = semantic.exercise(handler, "ConstructThenDestruct", {"i": 90}, act_as=["Alice"])
    assert tx.result == 90
    # 5,000 levels of recursive construction evaluate fine; passing the result to the
    # nested `Destruct` exercise then hits the LF value nesting limit, as on a real ledger.
    with pytest.raises(errors.InvalidArgument, match="maximum nesting depth"):
        semantic.exercise(handler, "ConstructThenDestruct", {"i": 5000}, act_as=["Alice"])


def test_fibonacci_choice(shared_fixtures: Path) -> None:
    bench = Fixture(load_dar((shared_fixtures / "daml" / "benchtool-tests-1.15.dar").read_bytes()))
    contract = bench.create("Bench:InefficientFibonacci", {"owner": "Alice"}, act_as=["Alice"])
    tx = bench.exercise(contract, "InefficientFibonacci_Compute", {"value": 15}, act_as=["Alice"])
    assert bench.payload(tx.created[0]) == {"owner": "Alice", "result": "610"}


def test_decimal_literal_rounding_template(model: Fixture) -> None:
    contract = model.create("Test:DecimalRounding", {"party": "Alice",
                                                     "number": "0.00000000005"},
                            act_as=["Alice"])
    # Half-even: 0.00000000005 at scale 10 rounds to 0.0000000000.
    assert contract.argument.get("number") == Decimal("0E-10")
    assert model.payload(contract)["number"] == "0.0"


# ------------------------------------------------------------------------------ sweep
LEDGER_LEVEL_ERRORS = (
    errors.ContractNotFound, errors.ContractKeyNotFound, errors.ContractNotActive,
    errors.UnhandledException, errors.PreconditionFailed, errors.AuthorizationError,
    errors.DuplicateContractKey, errors.WronglyTypedContract, errors.UserError,
)


@pytest.mark.parametrize(("dar_name", "minimum_ok"), [
    # Minimums are the counts observed with these sample arguments (of 107, 135, 17, 31).
    ("model-tests-1.15.dar", 83),
    ("semantic-tests-1.15.dar", 95),
    ("TestingTypes-1_0_0-sdk_0_13_36-lf_1_6.dar", 17),
    ("TestingTypes-1_6_0-sdk_1_15_0-lf_1_13.dar", 29),
    # Every choice of these succeeds with sample arguments.
    ("benchtool-tests-1.15.dar", 17),
    ("dd-0.0.1-sdk-2.3.0-lf-1.14.dar", 4),
    ("dd-0.0.1-sdk-2.4.0-lf-1.15.dar", 4),
    ("TestingTypes-1_0_0-sdk_1_0_0-lf_1_8.dar", 18),
    ("TestingTypes-1_0_0-sdk_1_12_0-lf_1_11.dar", 18),
    ("dummy-daml-app-0.0.1-sdk_1_3_0-lf_1_8.dar", 2),
    *((dar_name, 2) for dar_name in ENCODER_DARS),
])
def test_every_choice_runs_or_fails_with_a_ledger_error(shared_fixtures: Path, dar_name: str,
                                                        minimum_ok: int) -> None:
    """Exercise every choice of every template on a fresh contract with sample arguments.

    Sample data (made-up contract ids, keys that do not exist, assertions on sample values)
    makes some choices fail, but only ever with a ledger-level error, never an internal one.
    """
    fixture = Fixture(load_dar((shared_fixtures / "daml" / dar_name).read_bytes()))
    succeeded = 0
    for module in fixture.dar.main_package.modules.values():
        for template in module.templates.values():
            for choice in template.choices.values():
                fixture.ledger = MemoryLedger()
                try:
                    payload = sample_json(fixture.codec, TCon(template.name))
                    contract = fixture.create(template.name.qualified_name, payload,
                                              act_as=["Alice"])
                    tx = fixture.exercise(contract, choice.name,
                                          sample_json(fixture.codec, choice.arg_type),
                                          act_as=["Alice"])
                    fixture.codec.encode(choice.return_type, tx.result)
                    succeeded += 1
                except LEDGER_LEVEL_ERRORS:
                    pass
    assert succeeded >= minimum_ok


def test_get_time_uses_the_command_ledger_time(model: Fixture) -> None:
    dummy = model.create("Test:Dummy", {"operator": "Alice"}, act_as=["Alice"])
    arg_type = model.engine.choice(dummy.template_id, "ConsumeIfTimeIsBetween").arg_type
    window = model.codec.decode(arg_type, {"begin": "2020-01-01T00:00:00Z",
                                           "end": "2020-12-31T00:00:00Z"})
    inside = model.codec.decode(TBuiltin(PrimType.TIMESTAMP), "2020-06-01T12:00:00Z")
    outside = model.codec.decode(TBuiltin(PrimType.TIMESTAMP), "2021-06-01T12:00:00Z")
    with pytest.raises(errors.UnhandledException, match="AssertionFailed"):
        model.engine.exercise(dummy.contract_id, "ConsumeIfTimeIsBetween", window,
                              act_as=["Alice"], ledger=model.ledger, ledger_time=outside)
    tx = model.engine.exercise(dummy.contract_id, "ConsumeIfTimeIsBetween", window,
                               act_as=["Alice"], ledger=model.ledger, ledger_time=inside)
    assert [c.contract_id for c in tx.archived] == [dummy.contract_id]


def test_package_set_lists_templates_and_interfaces(semantic: Fixture) -> None:
    packages = semantic.engine.packages
    main = semantic.dar.main_package_id
    template = Identifier(main, "Interface", "T")
    assert template in packages.template_ids()
    # Interface3 implements its interface for Interface:T retroactively.
    assert set(packages.implemented_interfaces(template)) == {
        Identifier(main, "Interface1", "I"), Identifier(main, "Interface2", "I"),
        Identifier(main, "Interface3", "I")}
    assert Identifier(main, "InterfaceViews", "I") in packages.interface_ids()


def test_retroactive_interface_instance_choice(semantic: Fixture) -> None:
    contract = semantic.create("Interface:T", {"owner": "Rita"}, act_as=["Rita"])
    interface_id = Identifier(semantic.dar.main_package_id, "Interface3", "I")
    choice = semantic.engine.choice(interface_id, "MyArchive")
    tx = semantic.engine.exercise(contract.contract_id, "MyArchive",
                                  semantic.codec.decode(choice.arg_type, {}), act_as=["Rita"],
                                  ledger=semantic.ledger, interface_id=interface_id)
    assert tx.result == "Interface3.I"


def test_runaway_computation_hits_the_call_budget(shared_fixtures: Path) -> None:
    bench = Fixture(load_dar((shared_fixtures / "daml" / "benchtool-tests-1.15.dar").read_bytes()))
    bench.engine = Engine(bench.dar.packages.values(), max_calls=2_000)
    contract = bench.create("Bench:InefficientFibonacci", {"owner": "Alice"}, act_as=["Alice"])
    with pytest.raises(errors.EvaluationLimitExceeded, match="limit of 2000 function calls"):
        bench.exercise(contract, "InefficientFibonacci_Compute", {"value": 25}, act_as=["Alice"])


def test_contracts_round_trip_through_json(model: Fixture) -> None:
    iou = model.create("Iou:Iou", IOU, act_as=["Bank", "Alice"])
    encoded = model.codec.encode_contract(iou)
    assert encoded == {
        "contractId": iou.contract_id, "templateId": str(iou.template_id), "payload": IOU,
        "signatories": ["Alice", "Bank"], "observers": ["Carol"], "agreementText": "",
    }
    assert model.codec.decode_contract(json.loads(json.dumps(encoded))) == iou
    keyed = model.create("Test:TextKey", {"tkParty": "Kim", "tkKey": "json", "tkDisclosedTo": []},
                         act_as=["Kim"])
    encoded = model.codec.encode_contract(keyed)
    assert encoded["key"] == {"_1": "Kim", "_2": "json"}
    assert encoded["maintainers"] == ["Kim"]
    assert model.codec.decode_contract(json.loads(json.dumps(encoded))) == keyed
    with pytest.raises(CodecError, match="lacks the field 'contractId'"):
        model.codec.decode_contract({"templateId": str(keyed.template_id)})
    with pytest.raises(CodecError, match="Expected <packageId>:<module>:<entity>"):
        model.codec.decode_contract({"templateId": "Iou:Iou"})


def test_choice_resolution_follows_the_json_api_rules(semantic: Fixture) -> None:
    main = semantic.dar.main_package_id
    template = Identifier(main, "Interface", "T")
    interface1 = Identifier(main, "Interface1", "I")
    resolve = semantic.engine.resolve_choice
    # Declared on the template itself: the template's choice wins.
    assert resolve(template, "MyArchive")[0] is None
    # Only inherited from one interface.
    assert resolve(template, "ChoiceI1")[0] == interface1
    # Explicit choiceInterfaceId, or an interface id as the target.
    interface_id, choice = resolve(template, "MyArchive", interface1)
    assert interface_id == interface1 and choice.consuming
    assert resolve(interface1, "ChoiceI1")[0] == interface1
    with pytest.raises(errors.InvalidArgument, match="Cannot resolve Choice Argument type"):
        resolve(template, "NoSuchChoice")
    with pytest.raises(errors.InvalidArgument, match="Unknown choice ChoiceI2 of interface"):
        resolve(interface1, "ChoiceI2")
